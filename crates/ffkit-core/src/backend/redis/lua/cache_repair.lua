-- The namespace-wide keys of `cache-size --verify` / `--fix` (see
-- `namespace_damage`). ARGV: prefix, mode, then keys for 'reindex'.
-- 'check': the first damaged key as {key, kind, raw, length} ({} when
-- sound); writes nothing.
-- 'repair': deletes every damaged one and returns them all, four items
-- each: the counters are then recounted from the entries (a missing
-- counter is 0, and the verify that follows adds the recount), and an
-- index set is rebuilt from the records ('reindex').
-- 'orphans': 1 for each key ARGV[3..] that is a value without its record
-- now, else 0 (a scan's candidates, checked atomically).
-- 'reindex': adds each entry ARGV[3..] with a sound record to the index
-- sets it is missing from: `lru` and `crt` scored by its created_at (its
-- last access is not kept anywhere else), `exp` by its expires_at when it
-- expires. Members already there keep their scores.
local mode = ARGV[2]
if mode == 'check' then
  local d = namespace_damage()
  if d == nil then return {} end
  return {d[1], d[2], d[3], d[4] or 0}
end
if mode == 'repair' then
  local out = {}
  -- At most one damaged key per key checked.
  for _ = 1, 6 do
    local d = namespace_damage()
    if d == nil then break end
    redis.call('DEL', d[1])
    table.insert(out, d[1])
    table.insert(out, d[2])
    table.insert(out, d[3])
    table.insert(out, d[4] or 0)
  end
  return out
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
