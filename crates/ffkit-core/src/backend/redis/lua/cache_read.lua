-- Reads entry ARGV[2]: {1, value, created_at, now, hits} on a hit (and
-- refreshes its recency; {4, size, …} for a large value, below),
-- {2, expires_at, created_at, now} when expired (and drops it, adjusting
-- the total), {3, now, kind, ...} when damaged (below), {0} when missing.
-- ARGV: prefix, key, now (or ''), mode: '' (cache-read), 'hit' (cache-run
-- replays it: count the replay in the metadata's `hits`, which a rewrite
-- clears) or 'peek' (change nothing: no recency, no expiry, no count).
--
-- Damage: the scripts write a value and its record in one atomic step, so
-- a record field that is missing or not a canonical number, a metadata
-- key that is not a hash, a value key that is missing or not a string, or
-- a value whose length is not the recorded size was changed behind
-- ffkit's back (a SETRANGE, a SET, an HSET, an RPUSH, a partial restore).
-- Its bytes are never returned as good; the check costs no extra round
-- trip (the length of the string this script already holds). Unless
-- peeking, the read that finds the damage drops the entry in the same step
-- (`drop`: the value, the metadata and the totals together), so the next
-- read is a miss. The kinds, after {3, now}:
--   'field', name, the value (at most 64 bytes; false: missing), its length
--   'metadata', the metadata key's type
--   'value', the value key's type ('none': missing)
--   'length', recorded size, the value's length
--   'orphan': a value key without its metadata key (deleted by hand)
-- A namespace-wide key that is damaged (`namespace_check`) is an error
-- reply before anything is read or written.
-- Values above this many bytes come back in a request of their own (below).
local BIG_VALUE = 4194304
local bad = namespace_check()
if bad then return bad end
local k = ARGV[2]
local now = now_of(ARGV[3])
local mode = ARGV[4] or ''
local rec = record(k)
local damaged = function(...)
  if mode ~= 'peek' then drop(k) end
  return {3, now, ...}
end
if rec == nil then
  if redis.call('EXISTS', vkey(k)) == 1 then
    return damaged('orphan')
  end
  return {0}
end
local bad_record = record_damage(rec)
if bad_record then
  return damaged(unpack(bad_record))
end
local e = rec.expires_at
if e ~= 0 and e <= now then
  if mode ~= 'peek' then drop(k) end
  return {2, e, rec.created_at, now}
end
-- A large value is not copied through Lua: a script's GET and its return
-- copy the string twice, 2.4 s of a busy server for 512 MiB, past the
-- caller's timeout however long it is. Its length is checked with STRLEN
-- and {4, size, created_at, now, hits} sent instead; the caller then GETs
-- it in a request of its own, whose deadline grows with the size as a
-- large write's does.
local v, vtype, len
if rec.size > BIG_VALUE then
  len = redis.pcall('STRLEN', vkey(k))
  if type(len) == 'table' and len.err then
    return damaged('value', type_of(vkey(k)))
  end
  if len == 0 and redis.call('EXISTS', vkey(k)) == 0 then
    return damaged('value', 'none')
  end
else
  v, vtype = value_of(k)
  if not v then
    return damaged('value', vtype)
  end
  len = string.len(v)
end
local bad_length = length_damage(rec, len)
if bad_length then
  return damaged(unpack(bad_length))
end
local hits = rec.hits
if mode == 'hit' then
  hits = redis.call('HINCRBY', mkey(k), 'hits', 1)
end
if mode ~= 'peek' then
  redis.call('ZADD', LRU, now, k)
end
if not v then
  return {4, rec.size, rec.created_at, now, hits}
end
return {1, v, rec.created_at, now, hits}
