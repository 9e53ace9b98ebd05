-- Replays a set of prepared requests (bench/capacity.py writes them as a Lua file), cycling through
-- them; each thread starts at its own offset. Environment:
--   HW_BENCH_REQUESTS  the Lua file returning { {path=..., headers={...}, body=...}, ... }
--   HW_BENCH_DELAY_MS  set: each connection waits this long before each request (a paced load)
-- At the end it prints "HW_LATENCY_US <p50> <p95> <p99> <max>" for the harness.
local prepared = {}
local counter = 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local requests = dofile(os.getenv("HW_BENCH_REQUESTS"))
  for i, r in ipairs(requests) do
    prepared[i] = wrk.format("POST", r.path, r.headers, r.body)
  end
  counter = math.random(#prepared)
end

function request()
  counter = counter % #prepared + 1
  return prepared[counter]
end

local delay_ms = tonumber(os.getenv("HW_BENCH_DELAY_MS") or "")
if delay_ms and delay_ms > 0 then
  function delay()
    return delay_ms
  end
end

function done(summary, latency, requests)
  io.write(string.format("HW_LATENCY_US %d %d %d %d\n", latency:percentile(50), latency:percentile(95),
    latency:percentile(99), latency.max))
end
