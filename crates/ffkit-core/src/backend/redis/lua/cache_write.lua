-- Writes entry ARGV[2] = ARGV[3] with TTL ARGV[4] seconds (0 = never),
-- adjusting the total by the size difference, then sweeps one bounded step.
-- ARGV: prefix, key, value, ttl, now (or '').
local bad = namespace_check()
if bad then return bad end
local k, v, ttl = ARGV[2], ARGV[3], tonumber(ARGV[4])
local now = now_of(ARGV[5])
-- The entry this replaces, checked before anything is written: a damaged
-- one (its size unusable, its metadata key not a hash) is dropped first,
-- adjusting the totals as a read that finds it would, and this write is
-- then a new entry. So is a value left without its record (an orphan:
-- `drop` takes it off the counters if they held it).
local rec = record(k)
if (rec ~= nil and rec.size == nil) or (rec == nil and redis.call('EXISTS', vkey(k)) == 1) then
  drop(k)
  rec = nil
end
local size = string.len(v)
local exp = 0
if ttl > 0 then exp = now + ttl end
touch(k)
redis.call('SET', vkey(k), v)
-- A rewrite is a new recording: its replay count (cache-run) starts again.
redis.call('HDEL', mkey(k), 'hits')
redis.call('HSET', mkey(k), 'key', k, 'created_at', now, 'expires_at', exp, 'ttl', ttl, 'size', size)
if rec ~= nil then
  add(TOTAL, size - rec.size)
else
  add(TOTAL, size)
  add(COUNT, 1)
end
redis.call('ZADD', LRU, now, k)
redis.call('ZADD', CRT, now, k)
if ttl > 0 then
  redis.call('ZADD', EXP, exp, k)
else
  redis.call('ZREM', EXP, k)
end
sweep(now, 16)
return size
