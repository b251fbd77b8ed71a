-- Shared prelude of the cache scripts (prepended to each at build time).
-- An entry KEY of the cache with prefix P is P..'v:'..KEY (the value) and
-- P..'m:'..KEY (hash: key, created_at, expires_at (0 = never), ttl, size,
-- and hits once cache-run replays it).
-- P..'total' and P..'count' are the exact bytes of all values and the
-- number of entries; every write, delete, eviction and expiry goes through
-- these scripts, which adjust both in the same atomic step. Entries never
-- use Redis's own key expiry (an expiring key would not adjust the total):
-- P..'exp' (score expires_at) and P..'lru' (score last access) are sorted
-- sets, and expired entries are dropped in bounded sweep steps. P..'crt'
-- (score created_at) orders entries by age for `cache-evict --older-than`.
--
-- A Redis script is not rolled back when a command in it fails: what ran
-- before the failure stays. So every script reads and checks what it will
-- rely on before its first write, and a record damaged behind ffkit's back
-- (an HSET, a SET of another type, a partial restore) is answered as
-- damage, never as a failed command halfway through a change.
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

-- A number ffkit wrote, by the rule the local index files are read with
-- (`cache::index::parse_canonical`): '0', or a digit 1-9 and more digits;
-- no sign, space, leading zero, fraction or exponent. At most 15 digits,
-- so the Lua number is exact. `signed` (the times) allows a '-' before a
-- non-zero one, as the local sidecar's times do. nil for anything else
-- (a Redis nil, false, arrives here as a non-string).
local function canon(s, signed)
  if type(s) ~= 'string' then return nil end
  local neg = signed and string.sub(s, 1, 1) == '-'
  if neg then s = string.sub(s, 2) end
  if s == '0' then
    if neg then return nil end
    return 0
  end
  if #s > 15 or not string.find(s, '^[1-9]%d*$') then return nil end
  if neg then return -tonumber(s) end
  return tonumber(s)
end

-- The numeric fields of a record, and the most each can hold: a size
-- within Redis's 512 MiB string (ffkit refuses longer values before
-- sending them), a TTL within the 1e9 s `--ttl` accepts.
local FIELDS = {'size', 'expires_at', 'created_at', 'ttl', 'hits'}
local SIGNED = {expires_at = true, created_at = true}
local MAX = {size = 536870912, ttl = 1000000000}

-- The type of key `key` ('string', 'hash', 'list', ...; 'none').
local function type_of(key)
  return redis.call('TYPE', key).ok
end

-- Entry k's record, read and checked; writes nothing. nil when it has
-- none (no metadata key); else a table of its fields as numbers (`hits`
-- 0 when absent), with `bad` = {field, raw value (false: missing)} for
-- the first that is missing or not canonical, or `bad` = {'metadata',
-- type} when the metadata key is not a hash.
local function record(k)
  local m = redis.pcall('HMGET', mkey(k), unpack(FIELDS))
  if m.err then
    return {bad = {'metadata', type_of(mkey(k))}}
  end
  local rec = {}
  local any = false
  for i, f in ipairs(FIELDS) do
    local raw = m[i]
    any = any or raw ~= false
    local n = canon(raw, SIGNED[f])
    if n ~= nil and MAX[f] and n > MAX[f] then n = nil end
    if n ~= nil then
      rec[f] = n
    elseif f == 'hits' and raw == false then
      rec.hits = 0
    elseif not rec.bad then
      rec.bad = {f, raw}
    end
  end
  -- A hash has at least one field: none of ours and no key is no entry.
  if not any and redis.call('EXISTS', mkey(k)) == 0 then
    return nil
  end
  return rec
end

-- Entry k's value: the string, or nil and the key's type when the value
-- key is missing ('none') or holds another type.
local function value_of(k)
  local v = redis.pcall('GET', vkey(k))
  if type(v) == 'table' and v.err then
    return nil, type_of(vkey(k))
  end
  if not v then return nil, 'none' end
  return v
end

-- What a read refuses in entry k's record rec (record(k), not nil): nil
-- when its fields are sound, else the damage as `cache_read.lua` answers
-- it after {3, now}: {'metadata', type} or {'field', name, raw (at most 64
-- bytes; false: missing), its length}.
local function record_damage(rec)
  if not rec.bad then return nil end
  local what, raw = rec.bad[1], rec.bad[2]
  if what == 'metadata' then
    return {'metadata', raw}
  end
  local len = 0
  if raw then
    len = string.len(raw)
    raw = string.sub(raw, 1, 64)
  end
  return {'field', what, raw, len}
end

-- {'length', recorded size, len} when a value of len bytes is not what
-- its sound record rec says, else nil.
local function length_damage(rec, len)
  if len ~= rec.size then
    return {'length', rec.size, len}
  end
  return nil
end

-- The damage a read would find in entry k whose value key is a string
-- and which has a record (what `cache-size --verify` checks for each
-- value it scans): record_damage, else length_damage by STRLEN (the value
-- itself is not read). nil when sound, or when k is not such an entry
-- (no record, a value key of another type or none: the verify's other
-- checks, or gone).
local function stored_damage(k)
  if type_of(vkey(k)) ~= 'string' then return nil end
  local rec = record(k)
  if rec == nil then return nil end
  return record_damage(rec) or length_damage(rec, redis.call('STRLEN', vkey(k)))
end

-- A text made safe for one word of an error reply (which is one line):
-- every byte but letters, digits and `-._:{}/` percent-escaped; the
-- reader decodes it and shows it escaped.
local function esc(s)
  return (string.gsub(s, '[^%w%-%._:{}/]', function(c)
    return string.format('%%%02X', string.byte(c))
  end))
end

-- The namespace-wide keys, read and checked; writes nothing. A list of
-- every damaged one, empty when sound: {key, 'value', raw (at most 64
-- bytes), its length} for a counter (`total`, `count`) that is not a
-- canonical whole number, {key, 'type', type} for a key of another type
-- (a counter that is not a string, an index set `exp`, `lru`, `crt` or
-- `verifying` that is not a sorted set), {key, 'missing', ''} for a
-- counter missing while the namespace holds entries. An empty cache has
-- no counters; once one write made both, a missing one was deleted behind
-- ffkit's back, and read as 0 it would let a rewrite store a negative
-- total. The test costs nothing while both exist (the common case): only
-- when one is missing are the other and the `lru` and `crt` sets looked
-- at (every counted entry is in both sets).
local function namespace_damage()
  local out = {}
  local got = {}
  for _, key in ipairs({TOTAL, COUNT}) do
    local v = redis.pcall('GET', key)
    if type(v) == 'table' and v.err then
      table.insert(out, {key, 'type', type_of(key)})
      got[key] = true
    else
      if v and canon(v) == nil then
        table.insert(out, {key, 'value', string.sub(v, 1, 64), string.len(v)})
      end
      got[key] = v and true or false
    end
  end
  local sets = {}
  for _, key in ipairs({EXP, LRU, CRT, VERIFYING}) do
    local t = type_of(key)
    if t ~= 'zset' and t ~= 'none' then
      table.insert(out, {key, 'type', t})
    end
    sets[key] = t
  end
  if not (got[TOTAL] and got[COUNT]) then
    local held = got[TOTAL] or got[COUNT]
    for _, key in ipairs({LRU, CRT}) do
      held = held or (sets[key] == 'zset' and redis.call('ZCARD', key) > 0)
    end
    if held then
      for _, key in ipairs({TOTAL, COUNT}) do
        if not got[key] then table.insert(out, {key, 'missing', ''}) end
      end
    end
  end
  return out
end

-- The error reply every script answers before its first write when a
-- namespace-wide key is damaged (the Rust side turns it into exit 10):
-- `FFKIT_DAMAGED key value raw length`, `FFKIT_DAMAGED key type TYPE` or
-- `FFKIT_DAMAGED key missing`, each word escaped, for the first damaged
-- key. nil when the keys are sound.
local function namespace_check()
  local d = namespace_damage()[1]
  if d == nil then return nil end
  local msg = 'FFKIT_DAMAGED ' .. esc(d[1]) .. ' ' .. d[2] .. ' ' .. esc(d[3])
  if d[4] then msg = msg .. ' ' .. d[4] end
  return redis.error_reply(msg)
end

-- Adds n (may be negative) to counter key, never storing less than 0: a
-- counter below what a change takes off was already wrong (changed behind
-- ffkit's back, or reset by a repair while writers ran), and a negative
-- one would be damage that stops every later script. `--verify` shows
-- what the clamp hid as drift, and `--fix` corrects it. Only a change
-- that takes off reads the counter first (a new entry costs no GET).
local function add(key, n)
  if n < 0 then
    local cur = tonumber(redis.call('GET', key) or '0')
    if cur + n < 0 then n = -cur end
  end
  -- `-cur` of a counter at 0 is Lua's -0, which INCRBY refuses ("value
  -- is not an integer"): there is nothing to add then, but the counter
  -- must exist afterwards (a literal 0 creates a missing one as "0"): the
  -- first entry of a namespace may be an empty value, and a counter
  -- missing while the namespace holds entries is damage that stops every
  -- later script.
  if n == 0 then
    redis.call('INCRBY', key, 0)
    return 0
  end
  redis.call('INCRBY', key, n)
  return n
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

-- Removes entry k, whatever state it is in; returns the bytes taken off
-- the total, or -1 if there was no entry. Everything is read first, so a
-- damaged record cannot stop it halfway. The total loses the recorded
-- size, what the write that made the entry added; when the record has
-- none that is usable (damaged behind ffkit's back), the value's length
-- instead, which is that size unless the value was changed too (then
-- `cache-size --verify --fix` corrects the rest).
--
-- A value without its record (the metadata key deleted by hand: an
-- orphan) is removed too. Whether the counters hold it is told by the
-- recency and age sets: every write that counts an entry adds it to
-- both, and only a drop takes it out again, so an orphan still in one of
-- them was counted (its value's length and one entry come off) and one in
-- neither was set by hand and never counted (0 comes off).
-- The counters never go below 0: a recorded size rewritten above what
-- the total holds takes off what it holds (a negative total would be a
-- damaged key that stops every later write): `add` clamps both, and
-- what came off the total is returned.
local function take_off(bytes)
  add(COUNT, -1)
  return 0 - add(TOTAL, 0 - bytes)
end

local function drop(k)
  local rec = record(k)
  local bytes = 0
  local orphan, counted = false, false
  if rec ~= nil then
    if rec.size ~= nil then
      bytes = rec.size
    elseif type_of(vkey(k)) == 'string' then
      bytes = redis.call('STRLEN', vkey(k))
    end
  else
    local t = type_of(vkey(k))
    orphan = t ~= 'none'
    if t == 'string' then
      bytes = redis.call('STRLEN', vkey(k))
    end
    counted = redis.call('ZSCORE', LRU, k) ~= false or redis.call('ZSCORE', CRT, k) ~= false
  end
  touch(k)
  redis.call('ZREM', EXP, k)
  redis.call('ZREM', LRU, k)
  redis.call('ZREM', CRT, k)
  if rec == nil then
    if not orphan then
      return -1
    end
    redis.call('DEL', vkey(k))
    if not counted then
      return 0
    end
    return take_off(bytes)
  end
  redis.call('DEL', vkey(k), mkey(k))
  return take_off(bytes)
end

-- One bounded sweep step: drops at most n entries expired at now.
local function sweep(now, n)
  local ks = redis.call('ZRANGEBYSCORE', EXP, '-inf', now, 'LIMIT', 0, n)
  for _, k in ipairs(ks) do
    drop(k)
  end
  return ks
end
