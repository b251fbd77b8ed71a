-- Reads entry ARGV[2]: {1, value} on a hit (and refreshes its recency),
-- {2, expires_at} when expired (and drops it, adjusting the total), {0}
-- when missing.
-- ARGV: prefix, key, now (or '').
local k = ARGV[2]
local now = now_of(ARGV[3])
local e = redis.call('HGET', mkey(k), 'expires_at')
if not e then
  return {0}
end
e = tonumber(e)
if e > 0 and e <= now then
  drop(k)
  return {2, e}
end
redis.call('ZADD', LRU, now, k)
return {1, redis.call('GET', vkey(k))}
