# Turns the CSV files of one scripts/bench run into the Markdown report (stdout) and an SVG plot
# of throughput and p99 latency against concurrency for xacoord, B0, B1 and, when measured,
# xacoord-store-lr (out/bench.svg).
# Input: out/shop.csv as the main file; out/single.csv, coordonly.csv, wrk.csv, memory.csv and
# recovery.csv are read
# by name. Plain awk so that the report needs nothing beyond what the build needs.
BEGIN { FS = ","; nconc = 0 }

FNR == 1 { next }
{
    mode = $1; c = $2 + 0
    if (!(c in seen)) { seen[c] = 1; conc[++nconc] = c }
    tps[mode, c] = $7; p50[mode, c] = $8; p99[mode, c] = $9; p999[mode, c] = $10
    n = $4 + $5 + $6
    abort[mode, c] = n > 0 ? ($5 + $6) / n : 0
    if (mode == "xacoord") group[c] = $11
}

function ratio(a, b) { return b > 0 ? sprintf("%.2f", a / b) : "-" }

function read_csv(file, rows,    line, k) {
    k = 0
    while ((getline line < file) > 0) rows[k++] = line
    close(file)
    return k
}

function x_of(i) { return 70 + (i - 1) * 260 / (nconc > 1 ? nconc - 1 : 1) }

function panel(x0, title, key, ymax,    i, m, pts, y, col, name, label, t, val, nm) {
    printf "<g transform=\"translate(%d,0)\">\n", x0 >> svg
    printf "<text x=\"200\" y=\"20\" text-anchor=\"middle\">%s</text>\n", title >> svg
    printf "<line x1=\"60\" y1=\"250\" x2=\"340\" y2=\"250\" stroke=\"black\"/>\n" >> svg
    printf "<line x1=\"60\" y1=\"40\" x2=\"60\" y2=\"250\" stroke=\"black\"/>\n" >> svg
    for (t = 0; t <= 4; t++) {
        y = 250 - t * 50
        printf "<text x=\"55\" y=\"%d\" text-anchor=\"end\" font-size=\"10\">%g</text>\n", \
            y + 3, ymax * t / 4 >> svg
    }
    for (i = 1; i <= nconc; i++)
        printf "<text x=\"%d\" y=\"265\" text-anchor=\"middle\" font-size=\"10\">%d</text>\n", \
            x_of(i), conc[i] >> svg
    printf "<text x=\"200\" y=\"285\" text-anchor=\"middle\" font-size=\"11\">concurrency</text>\n" >> svg
    split("xacoord B0 B1 xacoord-store-lr", name, " ")
    split("#d62728 #1f77b4 #2ca02c #9467bd", col, " ")
    split("xacoord B0 B1 store-lr", label, " ")
    nm = (("xacoord-store-lr", conc[1]) in tps) ? 4 : 3
    for (m = 1; m <= nm; m++) {
        pts = ""
        for (i = 1; i <= nconc; i++) {
            val = key == "tps" ? tps[name[m], conc[i]] : p99[name[m], conc[i]]
            pts = pts sprintf("%d,%.1f ", x_of(i), 250 - 200 * val / ymax)
        }
        printf "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"%s\"/>\n", \
            col[m], pts >> svg
        printf "<text x=\"350\" y=\"%d\" fill=\"%s\" font-size=\"11\">%s</text>\n", \
            50 + m * 15, col[m], label[m] >> svg
    }
    print "</g>" >> svg
}

function nice(v,    p) { p = 1; while (p < v) p *= 10; if (p / 5 >= v) return p / 5; if (p / 2 >= v) return p / 2; return p }

END {
    if (nconc > 0) checkout_report()
    sections()
    if (nconc > 0) plot()
}

# The checkout tables (shop.csv): only when the checkout ran (scripts/bench --only may skip it).
function checkout_report(    i, c, ms, m, nlr) {
    print "## Checkout: xacoord against B0 (three local commits) and B1 (XA without coordinator)"
    print ""
    print "| concurrency | mode | committed/s | p50 ms | p99 ms | p99.9 ms | abort+error rate | xacoord/mode |"
    print "|---:|---|---:|---:|---:|---:|---:|---:|"
    for (i = 1; i <= nconc; i++) {
        c = conc[i]
        split("xacoord B0 B1", ms, " ")
        for (m = 1; m <= 3; m++)
            printf "| %d | %s | %.0f | %.2f | %.2f | %.2f | %.4f | %s |\n", c, ms[m], tps[ms[m], c], \
                p50[ms[m], c], p99[ms[m], c], p999[ms[m], c], abort[ms[m], c], \
                ms[m] == "xacoord" ? "1.00" : ratio(tps["xacoord", c], tps[ms[m], c])
    }
    nlr = 0
    for (i = 1; i <= nconc; i++) if (("xacoord-store-lr", conc[i]) in tps) nlr++
    if (nlr > 0) {
        print ""
        print "## Checkout with the decision store (xacoord-store-lr: decision_log = postgres, store in payment's database, payment the last resource)"
        print ""
        print "Measured in the same run, interleaved with the modes above."
        print ""
        print "| concurrency | committed/s | p50 ms | p99 ms | p99.9 ms | abort+error rate | store-lr / B1 | store-lr / B0 | store-lr / xacoord (journal) |"
        print "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        for (i = 1; i <= nconc; i++) {
            c = conc[i]; m = "xacoord-store-lr"
            printf "| %d | %.0f | %.2f | %.2f | %.2f | %.4f | %s | %s | %s |\n", c, tps[m, c], p50[m, c], \
                p99[m, c], p999[m, c], abort[m, c], ratio(tps[m, c], tps["B1", c]), \
                ratio(tps[m, c], tps["B0", c]), ratio(tps[m, c], tps["xacoord", c])
        }
    }
    print ""
    printf "Mean journal group size during the xacoord runs:"
    for (i = 1; i <= nconc; i++) printf " %s (c=%d)", group[conc[i]], conc[i]
    print "."
}

# The other parts, each from its own CSV when it ran.
function sections(    k, si, x, b, co, v, j, re, w) {

    if ((k = read_csv(out "/single.csv", si)) > 2) {
        split(si[1], x, ","); split(si[2], b, ",")
        print ""
        print "## Single-branch transaction (the checkout's payment branch alone)"
        print ""
        print "xacoord commits it in one phase (its claim marker first, no PREPARE, no journal fsync);"
        print "B0 is the same statements as one local transaction on the same connection type."
        print ""
        print "| concurrency | xacoord tps | B0 tps | xacoord / B0 | xacoord p50 ms | B0 p50 ms | xacoord p99 ms | B0 p99 ms |"
        print "|---:|---:|---:|---:|---:|---:|---:|---:|"
        printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", x[2], x[7], b[7], ratio(x[7], b[7]), x[8], b[8], x[9], b[9]
    }
    if ((k = read_csv(out "/coordonly.csv", co)) > 1) {
        split(co[1], v, ",")
        print ""
        print "## Coordinator only (memory participants, same 3-branch shape)"
        print ""
        print "| concurrency | decisions/s | daemon CPU s | CPU us/txn | decisions per CPU-second | mean group size | p50 ms | p99 ms |"
        print "|---:|---:|---:|---:|---:|---:|---:|---:|"
        printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", v[1], v[5], v[6], v[7], v[8], v[9], v[10], v[11]
    }
    if ((k = read_csv(out "/syscalls.csv", sc)) > 1) {
        split(sc[1], v, ",")
        print ""
        printf "System calls per committed transaction (strace -c over %s transactions): %s. ", v[1], v[3]
        printf "Share of the daemon's CPU samples in the kernel (perf): %s%%; the rest is user space.\n", v[4]
    }
    if ((k = read_csv(out "/profile.txt", pr)) > 0) {
        print ""
        print "Where the daemon's CPU goes (perf, self time, top functions):"
        print ""
        print "```"
        for (j = 0; j < k; j++) print pr[j]
        print "```"
    }
    if ((k = read_csv(out "/wrk.csv", wk)) > 1) {
        print ""
        print "## Second load generator: wrk against xabench"
        print ""
        print "The same requests sent by wrk (bench/wrk/xacoord.lua) in the same run, against the same"
        print "daemon configuration: wrk's successful transactions/s over xabench's should be about 1."
        print ""
        print "| load | concurrency | wrk ok/s | xabench ok/s | wrk / xabench | wrk p50 ms | wrk p99 ms | wrk non-2xx | wrk socket errors |"
        print "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
        split(co[1], v, ",")
        for (j = 1; j < k; j++) {
            split(wk[j], w, ",")
            other = w[1] == "shop" ? tps["xacoord", w[2] + 0] : v[5]
            printf "| %s | %s | %.0f | %.0f | %s | %s | %s | %s | %s |\n", \
                w[1] == "shop" ? "checkout" : "coordinator only", w[2], w[7], other, \
                ratio(w[7], other), w[8], w[9], w[5], w[6]
        }
    }
    if ((k = read_csv(out "/memory.csv", me)) > 1) {
        split(me[1], v, ",")
        print ""
        print "## Memory with transactions in flight"
        print ""
        print "| in flight | seen in flight | VmHWM before KiB | VmRSS during KiB | VmHWM after KiB | KiB per transaction |"
        print "|---:|---:|---:|---:|---:|---:|"
        printf "| %s | %s | %s | %s | %s | %s |\n", v[1], v[4], v[5], v[7], v[8], v[9]
    }
    if ((k = read_csv(out "/idle.csv", id)) > 1) {
        split(id[1], v, ",")
        print ""
        print "## Memory per idle keep-alive HTTP connection"
        print ""
        print "| connections | open | VmRSS before KiB | VmRSS after KiB | bytes per idle connection |"
        print "|---:|---:|---:|---:|---:|"
        printf "| %s | %s | %s | %s | %s |\n", v[1], v[2], v[3], v[4], v[5]
    }
    if ((k = read_csv(out "/recovery.csv", re)) > 1) {
        print ""
        print "## Recovery: restart to all resolved"
        print ""
        print "The databases alone: the same branches rolled back by XID over 32 connections per"
        print "database, with no listing and no coordinator (xabench recovery plants the set twice)."
        print ""
        print "| in-doubt transactions | prepared branches | /readyz 200 after s | none listed after s | databases alone s | xacoord rate / databases' rate |"
        print "|---:|---:|---:|---:|---:|---:|"
        for (j = 1; j < k; j++) {
            split(re[j], v, ",")
            printf "| %s | %s | %s | %s | %s | %.2f |\n", v[1], v[2], v[3], v[4], v[5], \
                (v[4] > 0 ? v[5] / v[4] : 0)
        }
    }
}

function plot(    key, ytps, yp99) {
    svg = out "/bench.svg"
    ytps = 0; yp99 = 0
    for (key in tps) if (tps[key] + 0 > ytps) ytps = tps[key] + 0
    for (key in p99) if (p99[key] + 0 > yp99) yp99 = p99[key] + 0
    ytps = nice(ytps); yp99 = nice(yp99)
    print "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"820\" height=\"300\" font-family=\"sans-serif\">" > svg
    print "<rect width=\"820\" height=\"300\" fill=\"white\"/>" >> svg
    panel(0, "committed transactions/s", "tps", ytps)
    panel(410, "p99 latency (ms)", "p99", yp99)
    print "</svg>" >> svg
    close(svg)
    print ""
    print "Plot: bench.svg"
}
