-- The namespace-wide keys of `cache-size` and `--verify` / `--fix` (see
-- `namespace_damage`). ARGV: prefix, mode, then keys for 'reindex'.
-- 'check': every damaged key, four items each {key, kind, raw, length}
-- ({} when sound); writes nothing.
-- 'size': {0, total, count} when sound (a missing counter of an empty
-- cache is 0), else {1} and the damage as 'check' lists it; writes
-- nothing. One script call, so plain `cache-size` finds the same damage
-- every other applet refuses, in the same round trip its two GETs took.
-- 'repair': repairs every damaged key and returns them as 'check' does: a
-- counter is set to 0 (the verify that follows adds the recount), an
-- index set is deleted and rebuilt from the records ('reindex').
-- 'orphans': 1 for each key ARGV[3..] that is a value without its record
-- now, else 0 (a scan's candidates, checked atomically).
-- 'records': for each key ARGV[3..], the damage a read would find in its
-- record or its value's length now (`stored_damage`: the items
-- `cache_read.lua` answers after {3, now}), or {} when there is none
-- (a scan's entries, checked atomically; writes nothing).
-- 'reindex': adds each entry ARGV[3..] with a sound record to the index
-- sets it is missing from: `lru` and `crt` scored by its created_at (its
-- last access is not kept anywhere else), `exp` by its expires_at when it
-- expires. Members already there keep their scores.
local mode = ARGV[2]
local function flat(ds, out)
  for _, d in ipairs(ds) do
    table.insert(out, d[1])
    table.insert(out, d[2])
    table.insert(out, d[3])
    table.insert(out, d[4] or 0)
  end
  return out
end
if mode == 'check' then
  return flat(namespace_damage(), {})
end
if mode == 'size' then
  local ds = namespace_damage()
  if #ds > 0 then return flat(ds, {1}) end
  return {0, tonumber(redis.call('GET', TOTAL) or '0'), tonumber(redis.call('GET', COUNT) or '0')}
end
if mode == 'repair' then
  local ds = namespace_damage()
  for _, d in ipairs(ds) do
    if d[1] == TOTAL or d[1] == COUNT then
      -- SET replaces a key of any type. Not deleted: a counter missing
      -- while entries exist is itself damage.
      redis.call('SET', d[1], '0')
    else
      redis.call('DEL', d[1])
    end
  end
  return flat(ds, {})
end
local bad = namespace_check()
if bad then return bad end
if mode == 'orphans' then
  -- 1 for each key ARGV[3..] that is a value without its record now.
  local out = {}
  for i = 3, #ARGV do
    local k = ARGV[i]
    local orphan = redis.call('EXISTS', vkey(k)) == 1 and redis.call('EXISTS', mkey(k)) == 0
    table.insert(out, orphan and 1 or 0)
  end
  return out
end
if mode == 'records' then
  local out = {}
  for i = 3, #ARGV do
    table.insert(out, stored_damage(ARGV[i]) or {})
  end
  return out
end
local n = 0
for i = 3, #ARGV do
  local k = ARGV[i]
  local rec = record(k)
  if rec ~= nil and not rec.bad then
    n = n + redis.call('ZADD', LRU, 'NX', rec.created_at, k)
    redis.call('ZADD', CRT, 'NX', rec.created_at, k)
    if rec.expires_at ~= 0 then
      redis.call('ZADD', EXP, 'NX', rec.expires_at, k)
    end
  end
end
return n
