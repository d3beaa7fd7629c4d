-- A second, independent load generator for the daemon's HTTP API: wrk (Debian's package) with
-- this script, next to xabench, in the same scripts/bench run. It sends the same requests as
-- xabench (bench/httpc.c) so the two must agree within noise.
--
--   WRK_MODE=shop WRK_PER_USER=N WRK_CONC=C WRK_OUT=F wrk -t C -c C -d S -s xacoord.lua URL
--   WRK_MODE=memory WRK_CONC=C WRK_OUT=F wrk -t T -c C -d S -s xacoord.lua URL
-- (URL ends in /v1/transactions.)
--
-- shop: the checkout of docs/design.md section 5. Thread k (one connection per thread: -t = -c)
-- is user k and walks its own orders ((k-1)*N+1 ...), exactly the data that
-- `scripts/bench __setup C N` made. memory: the coordinator-only shape on memory participants.
-- F gets one CSV line: mode,conc,seconds,requests,non2xx,errors,ok_per_s,p50_ms,p99_ms.

local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("user", counter)
  table.insert(threads, thread)
end

local mode, per_user, user, order, last_order
local non2xx = 0

local payment_branch = [[{"participant":"payment","statements":[]] ..
  [[{"sql":"UPDATE account SET balance = balance - $1 WHERE user_id = $2 AND balance >= $1",]] ..
  [["params":[1,%d],"expect_rows":1,"abort_reason":"insufficient balance"},]] ..
  [[{"sql":"INSERT INTO payment(order_id, user_id, amount) VALUES ($1, $2, $3)",]] ..
  [["params":[%d,%d,1]}]}]]

local shop_rest = [[{"participant":"order","statements":[]] ..
  [[{"sql":"UPDATE orders SET status = 'P' WHERE id = ? AND status = 'I'",]] ..
  [["params":[%d],"expect_rows":1,"abort_reason":"order is not awaiting payment"}]},]] ..
  [[{"participant":"warehouse","statements":[]] ..
  [[{"sql":"UPDATE stock SET qty = qty - ? WHERE sku = ? AND qty >= ?",]] ..
  [["params":[1,"B%d",1],"expect_rows":1,"abort_reason":"out of stock"},]] ..
  [[{"sql":"INSERT INTO shipment(order_id, sku, qty, status) VALUES (?, ?, ?, 'R')",]] ..
  [["params":[%d,"B%d",1]}]}]]

local memory_body = [[{"branches":[]] ..
  [[{"participant":"payment","statements":[{"sql":"rows 1"},{"sql":"rows 1"}]},]] ..
  [[{"participant":"order","statements":[{"sql":"rows 1"}]},]] ..
  [[{"participant":"warehouse","statements":[{"sql":"rows 1"},{"sql":"rows 1"}]}]}]]

function init(args)
  mode = os.getenv("WRK_MODE")
  per_user = tonumber(os.getenv("WRK_PER_USER") or "1")
  user = tonumber(wrk.thread:get("user"))
  order = (user - 1) * per_user + 1
  last_order = user * per_user
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  if mode == "memory" then
    return wrk.format(nil, nil, nil, memory_body)
  end
  -- Past its last order a thread repeats it: the daemon answers 409, counted as non-2xx.
  local o = order
  if order < last_order then order = order + 1 end
  local body = '{"branches":[' .. string.format(payment_branch, user, o, user) .. "," ..
    string.format(shop_rest, o, user, o, user) .. "]}"
  return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    wrk.thread:set("non2xx", non2xx)
  end
end

function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do
    bad = bad + (tonumber(t:get("non2xx")) or 0)
  end
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.timeout
  local secs = summary.duration / 1e6
  local ok = summary.requests - bad
  local out = io.open(os.getenv("WRK_OUT") or "/dev/stdout", "a")
  out:write(string.format("%s,%d,%.3f,%d,%d,%d,%.1f,%.2f,%.2f\n", os.getenv("WRK_MODE"),
    tonumber(os.getenv("WRK_CONC")), secs, summary.requests, bad, errors, ok / secs,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
  out:close()
end
