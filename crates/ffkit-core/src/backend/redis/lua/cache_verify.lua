-- The bounded steps of an exact `cache-size --verify` under concurrent
-- writers. ARGV: prefix, mode, id.
-- 'begin' / 'renew': registers (or keeps alive) verify ID for 60 s of the
-- server clock; from then on every write and drop adds its key to
-- P..'touched:'..ID. Returns 1.
-- 'end': atomically reads the counters and measures every touched entry
-- now: {registered (0/1), total, count, key1, len1 (-1: gone, not a
-- string, or without its record), ...}, and
-- unregisters ID. Keys the scan saw and nobody touched are unchanged since
-- the scan measured them, so the scan's lengths for those plus these for
-- the touched ones are the values' bytes at this instant.
local mode, id = ARGV[2], ARGV[3]
local touched = P .. 'touched:' .. id
local now = tonumber(redis.call('TIME')[1])
if mode == 'begin' or mode == 'renew' then
  if mode == 'begin' then
    redis.call('DEL', touched)
  end
  redis.call('ZADD', VERIFYING, now + 60, id)
  redis.call('EXPIRE', touched, 120)
  return 1
end
local score = redis.call('ZSCORE', VERIFYING, id)
local out = {0, tonumber(redis.call('GET', TOTAL) or '0'), tonumber(redis.call('GET', COUNT) or '0')}
if score and tonumber(score) >= now then
  out[1] = 1
end
for _, k in ipairs(redis.call('SMEMBERS', touched)) do
  table.insert(out, k)
  -- A value key of another type holds no value, and a value without its
  -- record is no entry (damage a read drops).
  if type_of(vkey(k)) == 'string' and redis.call('EXISTS', mkey(k)) == 1 then
    table.insert(out, redis.call('STRLEN', vkey(k)))
  else
    table.insert(out, -1)
  end
end
redis.call('ZREM', VERIFYING, id)
redis.call('DEL', touched)
return out
