-- Reads entries ARGV[5], ARGV[6], … in that order for `cache-batch
-- --read`, one request for many keys: {r1, r2, …}, each what
-- cache_read.lua returns for its key (`read_entry`). ARGV: prefix, now (or
-- ''), mode (as cache_read.lua's), then `room`: the most bytes of values
-- the reply may carry inline. It stops before the first key whose value
-- does not fit in what is left (the first key always fits: a value up to
-- BIG_VALUE), and after a damaged entry (as the one-key reads stop at its
-- error: the keys after it are not read); the caller sends the keys not
-- answered again. A namespace-wide key that is damaged is an error reply
-- before anything is read.
local bad = namespace_check()
if bad then return bad end
local now = now_of(ARGV[2])
local mode = ARGV[3] or ''
local room = tonumber(ARGV[4])
local out = {}
for i = 5, #ARGV do
  local r = read_entry(ARGV[i], now, mode, i > 5 and room or nil)
  if r == nil then break end
  out[#out + 1] = r
  if r[1] == 1 then room = room - string.len(r[2]) end
  if r[1] == 3 then break end
end
return out
