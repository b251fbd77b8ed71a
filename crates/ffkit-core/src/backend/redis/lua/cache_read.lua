-- Reads entry ARGV[2]: {1, value, created_at, now, hits} on a hit (and
-- refreshes its recency), {2, expires_at, created_at, now} when expired
-- (and drops it, adjusting the total), {0} when missing.
-- ARGV: prefix, key, now (or ''), mode: '' (cache-read), 'hit' (cache-run
-- replays it: count the replay in the metadata's `hits`, which a rewrite
-- clears) or 'peek' (change nothing: no recency, no expiry, no count).
local k = ARGV[2]
local now = now_of(ARGV[3])
local mode = ARGV[4] or ''
local m = redis.call('HMGET', mkey(k), 'expires_at', 'created_at', 'hits')
if not m[1] then
  return {0}
end
local e = tonumber(m[1])
local created = tonumber(m[2]) or 0
if e > 0 and e <= now then
  if mode ~= 'peek' then drop(k) end
  return {2, e, created, now}
end
local hits = tonumber(m[3]) or 0
if mode == 'hit' then
  hits = redis.call('HINCRBY', mkey(k), 'hits', 1)
end
if mode ~= 'peek' then
  redis.call('ZADD', LRU, now, k)
end
return {1, redis.call('GET', vkey(k)), created, now, hits}
