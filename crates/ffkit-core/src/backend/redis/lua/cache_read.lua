-- Reads entry ARGV[2]: {1, value, created_at, now, hits} on a hit (and
-- refreshes its recency), {2, expires_at, created_at, now} when expired
-- (and drops it, adjusting the total), {3, recorded size, value's length,
-- created_at, now} when damaged (below), {0} when missing.
-- ARGV: prefix, key, now (or ''), mode: '' (cache-read), 'hit' (cache-run
-- replays it: count the replay in the metadata's `hits`, which a rewrite
-- clears) or 'peek' (change nothing: no recency, no expiry, no count).
--
-- Damage: the scripts write a value and its recorded size in one atomic
-- step, so a value whose length is not the recorded size, a missing value
-- key, or a size or expiry that is not a number was changed behind
-- ffkit's back (a SETRANGE, a SET, an HSET, a partial restore). Its bytes
-- are never returned as good; the check costs no extra round trip (the
-- length of the string this script already holds). Unless peeking, the
-- read that finds the damage drops the entry in the same step: the total
-- counts recorded sizes, so it is exact again, and the next read is a miss.
local k = ARGV[2]
local now = now_of(ARGV[3])
local mode = ARGV[4] or ''
local m = redis.call('HMGET', mkey(k), 'expires_at', 'created_at', 'hits', 'size')
if not m[1] and not m[2] and not m[4] then
  return {0}
end
local e = tonumber(m[1])
local created = tonumber(m[2]) or 0
local size = tonumber(m[4])
local v = redis.call('GET', vkey(k))
local damaged = function()
  if mode ~= 'peek' then drop(k) end
  local len = -1
  if v then len = string.len(v) end
  return {3, size or -1, len, created, now}
end
if e == nil or size == nil or size ~= math.floor(size) then
  return damaged()
end
if e > 0 and e <= now then
  if mode ~= 'peek' then drop(k) end
  return {2, e, created, now}
end
if not v or string.len(v) ~= size then
  return damaged()
end
local hits = tonumber(m[3]) or 0
if mode == 'hit' then
  hits = redis.call('HINCRBY', mkey(k), 'hits', 1)
end
if mode ~= 'peek' then
  redis.call('ZADD', LRU, now, k)
end
return {1, v, created, now, hits}
