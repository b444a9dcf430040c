-- wrk script: POST /orders with a distinct order id per request, so every
-- request is a new order (no replays). Usage (against `make up`):
--   wrk -t2 -c64 -d30s --latency -s bench/wrk-orders.lua http://127.0.0.1:8080
local counter = 0
local run = tostring(os.time())
local threads = 0

-- Runs in the main Lua state; `thread:set` makes `tid` a global of each thread.
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

function request()
  counter = counter + 1
  local body = string.format('{"id":"wrk-%s-%d-%d","sku":"mag-safe-phone-case","qty":1}', run, tid, counter)
  return wrk.format("POST", "/orders", { ["Content-Type"] = "application/json" }, body)
end

function done(summary, latency, requests)
  io.write(string.format("p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  max %.2f ms\n",
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000))
end
