#!/usr/bin/env bash
# Crash and restart against the containers of scripts/containers (run by scripts/test). It
# stands up the four containers from fresh volumes (coordinator image with crash points), runs
# the shop's requests (demo/*.json) through the containerized coordinator and, in between:
#  - the coordinator is SIGKILLed right after its commit decision (crash point
#    after-commit-record) and restarted: the journal on its volume answers GET and the retry;
#  - the coordinator is SIGKILLed in phase 2 (after-first-commit-sent), the warehouse container
#    is SIGKILLed while the coordinator is down, the coordinator is started while the warehouse
#    is still down, then the warehouse: phase 2 finishes;
#  - the payment container is SIGKILLed after its branch prepared while the warehouse branch
#    still waits for a row lock: the decision is commit, phase 2 waits for payment to return.
# After each: I1-I5 (tests/invariants) within a bounded wait, nothing left prepared, and at the
# end every reply and every GET agree with each other and with the shop's rows.
# Usage: tests/containers/crash.sh   (root; 25-50 s with the images built, 3-5 min from nothing)
# Environment: XACOORD_CONTAINERS_DIR (default: a new directory in /tmp, removed at the end),
# XA_KEEP_CONTAINERS=1 leaves the containers running.
set -euo pipefail

ROOT=$(dirname "$(dirname "$(dirname "$(realpath "${BASH_SOURCE[0]}")")")")
SETTLE_TIMEOUT_S=60
LOCK_TIMEOUT_S=20
export XACOORD_PROJECT=${XACOORD_PROJECT:-xacoord-ctest}
export XACOORD_CRASH_POINTS=ON
OWN_DIR=0
if [ -z "${XACOORD_CONTAINERS_DIR:-}" ]; then
    XACOORD_CONTAINERS_DIR=$(mktemp -d /tmp/xacoord-ctest.XXXXXX)
    OWN_DIR=1
fi
export XACOORD_CONTAINERS_DIR
unset XACOORD_CRASH_AT XACOORD_CRASH_SKIP

FAILED=0 LOCK_PID="" LOCK_FIFO=""
declare -A REPLY=()

say() { printf 'crash.sh: %s\n' "$*"; }
fail() { printf 'crash.sh: FAIL %s\n' "$*"; FAILED=1; }
ok() { printf 'crash.sh: ok   %s\n' "$*"; }
check() { # DESCRIPTION COMMAND...
    local what=$1
    shift
    if "$@"; then ok "$what"; else fail "$what"; fi
}
check_eq() { # DESCRIPTION ACTUAL WANTED
    if [ "$2" = "$3" ]; then ok "$1: $2"; else fail "$1: $2, expected $3"; fi
}

ct() { "$ROOT/scripts/containers" "$@"; }

cleanup() {
    local rc=$?
    trap - EXIT
    [ -z "$LOCK_PID" ] || kill "$LOCK_PID" 2>/dev/null || true
    [ -z "$LOCK_FIFO" ] || rm -f "$LOCK_FIFO"
    if [ "$rc" != 0 ] || [ "$FAILED" != 0 ]; then
        say "last lines of the coordinator's log:"
        ct logs xacoord 2>&1 | tail -n 40 | sed 's/^/    /' || true
    fi
    if [ -z "${XA_KEEP_CONTAINERS:-}" ]; then
        ct down --volumes >/dev/null 2>&1 || say "scripts/containers down failed"
        [ "$OWN_DIR" = 0 ] || rm -rf "$XACOORD_CONTAINERS_DIR"
    fi
    exit "$rc"
}

# --- The shop, seen from the host -------------------------------------------------------------

pg() { psql -X -q -At -h 127.0.0.1 -p "$XA_PG_PORT" -U postgres -d payment -c "$1"; }
my() { # PORT DB SQL
    mariadb --no-defaults --protocol=tcp -h127.0.0.1 -P"$1" -uroot -N -B "$2" -e "$3"
}
order_status() { my "$XA_ORDER_PORT" shop_order "SELECT status FROM orders WHERE id = $1"; }
payments() { pg "SELECT count(*) FROM payment WHERE order_id = $1"; }
shipment() {
    my "$XA_WAREHOUSE_PORT" shop_warehouse \
        "SELECT coalesce(max(status), 'none') FROM shipment WHERE order_id = $1"
}
prepared_total() {
    local p o w
    p=$(pg "SELECT count(*) FROM pg_prepared_xacts")
    o=$(my "$XA_ORDER_PORT" shop_order "XA RECOVER" | wc -l)
    w=$(my "$XA_WAREHOUSE_PORT" shop_warehouse "XA RECOVER" | wc -l)
    echo $((p + o + w))
}

coordinator_exit() { # the exit status of the coordinator container once it stopped (bounded)
    local i state
    for ((i = 0; i < 100; i++)); do
        state=$(podman_or_docker inspect -f '{{.State.Status}} {{.State.ExitCode}}' \
            "$(ct_name xacoord)" 2>/dev/null || echo "absent -")
        case $state in exited* | stopped*) echo "${state#* }"; return ;; esac
        sleep 0.1
    done
    echo "still $state"
}
podman_or_docker() { CONTAINERS_CONF=$ROOT/docker/podman/containers.conf "$ENGINE" "$@"; }
ct_name() { # Docker Compose numbers its containers
    if [ "$ENGINE" = docker ]; then echo "$XACOORD_PROJECT-$1-1"; else echo "$XACOORD_PROJECT-$1"; fi
}

# Until I1-I5 hold (phase 2 and recovery finish after the answer), then no branch is prepared.
settled() {
    local i out=""
    for ((i = 0; i < SETTLE_TIMEOUT_S * 2; i++)); do
        if out=$("$ROOT/tests/invariants" check 2>&1) && [ "$(prepared_total)" = 0 ]; then
            ok "I1-I5 hold and nothing is prepared ($(paste -sd ' ' <<<"$out"))"
            return 0
        fi
        sleep 0.5
    done
    fail "after ${SETTLE_TIMEOUT_S}s: $(paste -sd ' ' <<<"$out"), prepared: $(prepared_total)"
}

# --- Requests and what their answers claimed --------------------------------------------------

OUT="" RC=0
submit() { # NAME: demo/NAME.json; remembers the claim of the reply
    RC=0
    OUT=$("$XACTL" submit "$ROOT/demo/$1.json" 2>&1) || RC=$?
    printf '    $ xactl submit demo/%s.json -> %s: %s\n' "$1" "$RC" "$(head -n 1 <<<"$OUT")"
    case $RC in
    0) REPLY[$1]=committed ;;
    1) REPLY[$1]=aborted ;;
    *) [ -n "${REPLY[$1]:-}" ] || REPLY[$1]=none ;;
    esac
}

get_outcome() { # ID: committed, aborted or unknown (404: never committed)
    local out rc=0
    out=$("$XACTL" --json show "$1" 2>/dev/null) || rc=$?
    if [ "$rc" = 3 ]; then echo unknown; return; fi
    sed -nE 's/.*"outcome":"([a-z]+)".*/\1/p' <<<"$out"
}

# What the rows say about a request: committed or not.
rows_say() { # ID
    local n=${1##*-}
    case $1 in
    checkout-*) [ "$(payments "$n")" = 1 ] && echo committed || echo "not committed" ;;
    ship-*)
        [ "$(order_status "$n")$(shipment "$n")" = WS ] && echo committed || echo "not committed"
        ;;
    esac
}

# Every reply that claimed an outcome, every GET and the rows tell the same story.
check_truth() {
    local id got rows
    for id in "${!REPLY[@]}"; do
        got=$(get_outcome "$id")
        rows=$(rows_say "$id")
        case $got in
        committed) check_eq "$id: GET and rows" "$got, rows $rows" "committed, rows committed" ;;
        aborted | unknown) check_eq "$id: GET ($got) and rows" "$rows" "not committed" ;;
        *) fail "$id: GET gave no outcome" ;;
        esac
        case ${REPLY[$id]} in
        committed | aborted)
            check_eq "$id: reply ${REPLY[$id]}, GET" "$got" \
                "$([ "${REPLY[$id]}" = committed ] && echo committed || echo "$got")"
            [ "${REPLY[$id]}" != aborted ] ||
                check_eq "$id: reply aborted, rows" "$rows" "not committed"
            ;;
        esac
    done
}

# --- Holding a row lock in the warehouse --------------------------------------------------------

# An open transaction holds the stock row of SKU until release_lock: the warehouse branch of a
# checkout of that SKU waits for it while the other branches prepare.
hold_lock() { # SKU
    local i
    LOCK_FIFO=$(mktemp -u "$XACOORD_CONTAINERS_DIR/lock.XXXXXX")
    mkfifo "$LOCK_FIFO"
    mariadb --no-defaults --protocol=tcp -h127.0.0.1 -P"$XA_WAREHOUSE_PORT" -uroot -N -B \
        shop_warehouse <"$LOCK_FIFO" >/dev/null &
    LOCK_PID=$!
    exec 8>"$LOCK_FIFO"
    echo "BEGIN; SELECT qty FROM stock WHERE sku = '$1' FOR UPDATE; SELECT 'locked';" >&8
    for ((i = 0; i < LOCK_TIMEOUT_S * 10; i++)); do
        [ "$(my "$XA_WAREHOUSE_PORT" shop_warehouse "SELECT count(*) FROM
            information_schema.innodb_trx WHERE trx_rows_locked > 0")" = 0 ] || return 0
        sleep 0.1
    done
    fail "the stock row of $1 was not locked after ${LOCK_TIMEOUT_S}s"
    return 1
}

release_lock() {
    echo "ROLLBACK;" >&8
    exec 8>&-
    wait "$LOCK_PID" || true
    LOCK_PID=""
    rm -f "$LOCK_FIFO"
    LOCK_FIFO=""
}

wait_for() { # SECONDS COMMAND...: until COMMAND succeeds
    local i n=$(($1 * 10))
    shift
    for ((i = 0; i < n; i++)); do
        "$@" && return 0
        sleep 0.1
    done
    return 1
}
payment_prepared() { [ "$(pg "SELECT count(*) FROM pg_prepared_xacts")" -ge 1 ]; }

# --- The scenarios -------------------------------------------------------------------------------

scenario_plain() {
    say "== a checkout and an out-of-stock checkout"
    submit checkout-1001
    check_eq "checkout-1001 answered" "$RC" 0
    submit checkout-1003
    check_eq "checkout-1003 (out of stock) answered" "$RC" 1
    settled
}

scenario_after_decision() {
    local id_before id_after
    say "== the coordinator SIGKILLed right after its commit decision"
    id_before=$(podman_or_docker inspect -f '{{.Id}}' "$(ct_name xacoord)")
    XACOORD_CRASH_AT=after-commit-record ct restart xacoord
    submit checkout-1002
    check_eq "checkout-1002: no answer" "$RC" 4
    check_eq "coordinator exit status (128 + SIGKILL)" "$(coordinator_exit)" 137
    check_eq "prepared branches while it is down" "$(prepared_total)" 3
    ct restart xacoord
    id_after=$(podman_or_docker inspect -f '{{.Id}}' "$(ct_name xacoord)")
    check "a new coordinator container (the journal came with the volume)" \
        test "$id_before" != "$id_after"
    check_eq "GET checkout-1002" "$(get_outcome checkout-1002)" committed
    submit checkout-1002
    check "the retry is answered from the journal" grep -q "committed (replayed)" <<<"$OUT"
    settled
}

scenario_phase2() {
    say "== the coordinator SIGKILLed in phase 2, the warehouse SIGKILLed while it is down"
    XACOORD_CRASH_AT=after-first-commit-sent ct restart xacoord
    submit ship-1001
    check_eq "ship-1001: no answer" "$RC" 4
    check_eq "coordinator exit status (128 + SIGKILL)" "$(coordinator_exit)" 137
    say "prepared branches left by phase 2: $(prepared_total)"
    ct kill warehouse
    ct restart xacoord --no-wait
    check "the coordinator is up but not ready while the warehouse is down" \
        wait_for 30 not_ready
    ct restart warehouse
    check "the coordinator is ready again" wait_for "$SETTLE_TIMEOUT_S" ready
    check_eq "GET ship-1001" "$(get_outcome ship-1001)" committed
    settled
}
ready() { "$XACTL" health >/dev/null 2>&1; }
not_ready() { # answering, and saying it is not ready (xactl health then exits 4)
    local out
    out=$("$XACTL" health 2>&1) || true
    grep -q '^ready: no' <<<"$out"
}

scenario_db_killed() {
    local job
    say "== the payment database SIGKILLed after its branch prepared, before phase 2"
    hold_lock SKU-3 || return 0
    "$XACTL" submit "$ROOT/demo/checkout-1004.json" >"$XACOORD_CONTAINERS_DIR/reply-1004" 2>&1 &
    job=$!
    check "payment prepared its branch" wait_for "$LOCK_TIMEOUT_S" payment_prepared
    ct kill payment
    release_lock
    RC=0
    wait "$job" || RC=$?
    OUT=$(cat "$XACOORD_CONTAINERS_DIR/reply-1004")
    printf '    $ xactl submit demo/checkout-1004.json -> %s: %s\n' "$RC" "$(head -n 1 <<<"$OUT")"
    [ "$RC" != 0 ] || REPLY[checkout-1004]=committed
    check_eq "checkout-1004 answered committed (the decision was durable)" "$RC" 0
    check "the answer names payment as pending" grep -q "payment" <<<"$OUT"
    ct restart payment
    check_eq "GET checkout-1004" "$(get_outcome checkout-1004)" committed
    settled
}

main() {
    [ "$(id -u)" -eq 0 ] || { say "must run as root"; exit 2; }
    local started=$SECONDS port
    for port in 15432 13306 13307 18080; do
        if ss -Hltn "sport = :$port" | grep -q .; then
            say "port $port is in use (another scripts/containers up?): stop that first"
            exit 1
        fi
    done
    "$ROOT/scripts/deps" # the database clients on the host
    trap cleanup EXIT
    ct down --volumes >/dev/null 2>&1 || true
    ct up
    eval "$(ct env)"
    ENGINE=$XACOORD_ENGINE
    "$ROOT/tests/invariants" baseline
    scenario_plain
    scenario_after_decision
    scenario_phase2
    scenario_db_killed
    say "== every reply and GET against the rows"
    check_truth
    if [ "$FAILED" != 0 ]; then
        say "FAILED ($((SECONDS - started))s)"
        exit 1
    fi
    say "passed ($((SECONDS - started))s)"
}

main "$@"
