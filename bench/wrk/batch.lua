-- wrk script: POST a batch of 50 track events to /v1/batch: the event of event.lua, each with its
-- own messageId, user, product, price and timestamp (as a real batch has; identical events would
-- flatter anything that compresses or caches).
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local bench = dofile(here .. "event.lua")

local events = {}
for i = 1, 50 do
  events[i] = bench.event
    :gsub("bench%-5f2b7c1e%-0001", string.format("bench-5f2b7c1e-%04d", i))
    :gsub("user%-1234567", string.format("user-%07d", (1234567 + i * 7919) % 10000000))
    :gsub("P%-50732", string.format("P-%05d", (50732 + i * 613) % 100000))
    :gsub('"price":89%.5', string.format('"price":%d.%d', 10 + (i * 37) % 90, i % 10))
    :gsub("10:20:30%.123Z", string.format("10:%02d:%02d.%03dZ", 20 + i % 10, (i * 7) % 60, (i * 131) % 1000))
end
bench.setup("/v1/batch", '{"batch":[' .. table.concat(events, ",") .. '],"sentAt":"2026-01-15T10:20:31.000Z"}')
