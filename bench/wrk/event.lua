-- The event bench/edge.py sends: a realistic browser track call of 637 bytes.
-- Loaded by track.lua and batch.lua. Environment:
--   HW_BENCH_AUTH         the Authorization header to send (e.g. "Basic <base64 of key:>")
--   HW_BENCH_SHOW_ERRORS  set: print the first non-2xx response of each thread to stderr (this
--                         makes wrk parse every response in Lua: for checks, not measurements)
local M = {}

M.event = '{"type":"track","event":"Product Added","userId":"user-1234567",'
  .. '"anonymousId":"5f2b7c1e-8a3d-4e6f-9b0a-1c2d3e4f5a6b","messageId":"bench-5f2b7c1e-0001",'
  .. '"timestamp":"2026-01-15T10:20:30.123Z","properties":{"product_id":"P-50732",'
  .. '"name":"Merino Crew Sweater","price":89.5,"quantity":1,"currency":"EUR","coupon":"WINTER10"},'
  .. '"context":{"library":{"name":"analytics.js","version":"5.2.0"},"locale":"de-DE",'
  .. '"page":{"path":"/products/merino-crew","url":"https://shop.example.com/products/merino-crew",'
  .. '"title":"Merino Crew Sweater"},"userAgent":"Mozilla/5.0 (X11; Linux x86_64) '
  .. 'AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"}}'

function M.setup(path, body)
  wrk.method = "POST"
  wrk.path = path
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
  local auth = os.getenv("HW_BENCH_AUTH")
  if auth and auth ~= "" then
    wrk.headers["Authorization"] = auth
  end
end

if os.getenv("HW_BENCH_SHOW_ERRORS") then
  local shown = false
  function response(status, headers, body)
    if status >= 300 and not shown then
      shown = true
      io.stderr:write("non-2xx response " .. status .. ": " .. body .. "\n")
    end
  end
end

return M
