-- One entry's read, shared by cache_read.lua (one key) and
-- cache_read_many.lua (`cache-batch --read`): what those return for key
-- K at `now` in `mode` (see cache_read.lua), or nil — having read or
-- changed nothing — when `room` (bytes; nil: no bound) is too small for
-- its value to come back inline. Damaged, expired and large entries take
-- no room.
-- Values above this many bytes come back in a request of their own (below).
local BIG_VALUE = 4194304
-- A hit's bookkeeping (its recency, cache-run's `hits`): nil when a
-- server out of memory (maxmemory with noeviction) refuses it. Redis
-- refuses a script's write that may grow memory only while the script has
-- written nothing, so this refusal leaves nothing half done, and the value
-- is answered without the bookkeeping: a read needs no memory, and it
-- used to fail the read (exit 1) and turn every cache-run hit into a run.
-- Any other error is raised as redis.call raises it (nothing was done).
local function bookkeeping(...)
  local r = redis.pcall(...)
  if type(r) == 'table' and r.err then
    if string.sub(r.err, 1, 4) == 'OOM ' then
      return nil
    end
    return redis.call(...)
  end
  return r
end
local function read_entry(k, now, mode, room)
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
  if room and rec.size <= BIG_VALUE and rec.size > room then
    return nil
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
    hits = bookkeeping('HINCRBY', mkey(k), 'hits', 1) or hits
  end
  if mode ~= 'peek' then
    bookkeeping('ZADD', LRU, now, k)
  end
  if not v then
    return {4, rec.size, rec.created_at, now, hits}
  end
  return {1, v, rec.created_at, now, hits}
end
