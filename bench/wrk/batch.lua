-- wrk script: POST a batch of 50 track events (see event.lua) to /v1/batch.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local bench = dofile(here .. "event.lua")

local events = {}
for i = 1, 50 do
  events[i] = bench.event
end
bench.setup("/v1/batch", '{"batch":[' .. table.concat(events, ",") .. '],"sentAt":"2026-01-15T10:20:31.000Z"}')
