-- wrk script: POST one ~600-byte track event to /v1/track (see event.lua).
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local bench = dofile(here .. "event.lua")

bench.setup("/v1/track", bench.event)
