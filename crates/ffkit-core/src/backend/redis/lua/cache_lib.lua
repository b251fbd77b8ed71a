-- Shared prelude of the cache scripts (prepended to each at build time).
-- An entry KEY of the cache with prefix P is P..'v:'..KEY (the value) and
-- P..'m:'..KEY (hash: key, created_at, expires_at (0 = never), ttl, size).
-- P..'total' and P..'count' are the exact bytes of all values and the
-- number of entries; every write, delete, eviction and expiry goes through
-- these scripts, which adjust both in the same atomic step. Entries never
-- use Redis's own key expiry (an expiring key would not adjust the total):
-- P..'exp' (score expires_at) and P..'lru' (score last access) are sorted
-- sets, and expired entries are dropped in bounded sweep steps. P..'crt'
-- (score created_at) orders entries by age for `cache-evict --older-than`.
local P = ARGV[1]
local TOTAL, COUNT, EXP, LRU = P .. 'total', P .. 'count', P .. 'exp', P .. 'lru'
local CRT = P .. 'crt'
-- P..'verifying' (score: deadline, server clock) names the `cache-size
-- --verify` runs under way; each has a set P..'touched:'..ID of the entries
-- changed since it started, so its recount can be exact under writers.
local VERIFYING = P .. 'verifying'
local function vkey(k) return P .. 'v:' .. k end
local function mkey(k) return P .. 'm:' .. k end

-- "now" in epoch seconds: the caller's override, else the server clock
-- (one clock for every host of a fleet).
local function now_of(arg)
  if arg ~= nil and arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1])
end

-- Notes that entry k changes, for every verify under way (one EXISTS when
-- none is: the common case).
local function touch(k)
  if redis.call('EXISTS', VERIFYING) == 0 then
    return
  end
  redis.call('ZREMRANGEBYSCORE', VERIFYING, '-inf', tonumber(redis.call('TIME')[1]))
  for _, id in ipairs(redis.call('ZRANGE', VERIFYING, 0, -1)) do
    redis.call('SADD', P .. 'touched:' .. id, k)
  end
end

-- Removes entry k; returns its value's bytes, or -1 if there was none.
-- A record whose size is not an integer (changed behind ffkit's back:
-- cache_read.lua calls that damage) still goes, with its count; the total
-- cannot know what it held (`cache-size --verify --fix` corrects it).
local function drop(k)
  touch(k)
  local size = redis.call('HGET', mkey(k), 'size')
  redis.call('ZREM', EXP, k)
  redis.call('ZREM', LRU, k)
  redis.call('ZREM', CRT, k)
  if not size and redis.call('EXISTS', mkey(k)) == 0 then
    return -1
  end
  redis.call('DEL', vkey(k), mkey(k))
  redis.call('DECR', COUNT)
  local n = tonumber(size)
  if n == nil or n ~= math.floor(n) then
    return 0
  end
  redis.call('DECRBY', TOTAL, n)
  return n
end

-- One bounded sweep step: drops at most n entries expired at now.
local function sweep(now, n)
  local ks = redis.call('ZRANGEBYSCORE', EXP, '-inf', now, 'LIMIT', 0, n)
  for _, k in ipairs(ks) do
    drop(k)
  end
  return ks
end
