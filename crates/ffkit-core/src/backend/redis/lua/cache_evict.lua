-- One bounded eviction step (a long script would block the whole server):
-- removes at most ARGV[6] entries: expired ones first (with --expired or
-- --max-bytes), then those created ARGV[7] seconds ago or earlier
-- (--older-than), then every entry (--all) or the least recently used
-- (ties by key) while the total is above --max-bytes.
-- ARGV: prefix, now (or ''), max_bytes (-1 = none), expired (0/1), all (0/1),
-- step, older_than seconds (-1 = none).
-- Returns {done, key1, bytes1, reason1, key2, ...}.
local bad = namespace_check()
if bad then return bad end
local now = now_of(ARGV[2])
local max = tonumber(ARGV[3])
local want_expired, all = ARGV[4] == '1', ARGV[5] == '1'
local budget = tonumber(ARGV[6])
local older = tonumber(ARGV[7] or '-1')
local out = {0}
local function take(k, reason)
  local s = drop(k)
  if s >= 0 then
    table.insert(out, k)
    table.insert(out, s)
    table.insert(out, reason)
  end
  budget = budget - 1
end
if want_expired or max >= 0 then
  local ks = redis.call('ZRANGEBYSCORE', EXP, '-inf', now, 'LIMIT', 0, budget)
  for _, k in ipairs(ks) do take(k, 'expired') end
  if budget <= 0 then return out end
end
if older >= 0 then
  local ks = redis.call('ZRANGEBYSCORE', CRT, '-inf', now - older, 'LIMIT', 0, budget)
  for _, k in ipairs(ks) do take(k, 'older-than') end
  if budget <= 0 then return out end
end
if all then
  local ks = redis.call('ZRANGE', LRU, 0, budget - 1)
  for _, k in ipairs(ks) do take(k, 'all') end
  if redis.call('ZCARD', LRU) > 0 then return out end
elseif max >= 0 then
  while budget > 0 and tonumber(redis.call('GET', TOTAL) or '0') > max do
    local ks = redis.call('ZRANGE', LRU, 0, 0)
    if #ks == 0 then break end
    take(ks[1], 'lru')
  end
  if tonumber(redis.call('GET', TOTAL) or '0') > max and redis.call('ZCARD', LRU) > 0 then
    return out
  end
end
out[1] = 1
return out
