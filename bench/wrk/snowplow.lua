-- wrk script: POST one Snowplow event (a self-describing "product added", the same content as
-- event.lua's Segment track call) to /com.snowplowanalytics.snowplow/tp2, as the JavaScript tracker
-- does. Environment:
--   HW_BENCH_KEY          the project key the tracker sends as its app id (`aid`)
--   HW_BENCH_SHOW_ERRORS  set: print the first non-2xx response of each thread to stderr (event.lua)
local key = os.getenv("HW_BENCH_KEY") or ""

local event = '{"e":"ue","eid":"bench-5f2b7c1e-0001","tv":"js-3.24.0","tna":"sp","aid":"' .. key .. '",'
  .. '"p":"web","uid":"user-1234567","duid":"5f2b7c1e-8a3d-4e6f-9b0a-1c2d3e4f5a6b",'
  .. '"sid":"9c1e5b2a-3f4d-4a6b-8c7d-0e1f2a3b4c5d","vid":"3","dtm":"1768472430123","stm":"1768472430456",'
  .. '"url":"https://shop.example.com/products/merino-crew","page":"Merino Crew Sweater","lang":"de-DE",'
  .. '"ue_pr":"{\\"schema\\":\\"iglu:com.snowplowanalytics.snowplow/unstruct_event/jsonschema/1-0-0\\",'
  .. '\\"data\\":{\\"schema\\":\\"iglu:com.acme/product_added/jsonschema/1-0-0\\",\\"data\\":{'
  .. '\\"product_id\\":\\"P-50732\\",\\"name\\":\\"Merino Crew Sweater\\",\\"price\\":89.5,\\"quantity\\":1,'
  .. '\\"currency\\":\\"EUR\\",\\"coupon\\":\\"WINTER10\\"}}}"}'

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local bench = dofile(here .. "event.lua")  -- its setup, and its error printing

bench.setup(
  "/com.snowplowanalytics.snowplow/tp2",
  '{"schema":"iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4","data":[' .. event .. ']}'
)
wrk.headers["Content-Type"] = "application/json; charset=UTF-8"
wrk.headers["Authorization"] = nil  -- a tracker sends its key as aid only
