-- Removes entry ARGV[2] (cache-run --invalidate), adjusting the total.
-- ARGV: prefix, key, and 'wrongtype' to remove it only if its value key
-- holds another type than a string (`cache-size --verify --fix`, which
-- measured it so: a writer may have rewritten it since).
-- 'orphan' removes it only if it is still a value without a record
-- (`cache-size --verify --fix`, `cache-evict --all`, which found it so).
-- 'damaged' removes it only if a read would still find its record damaged
-- or its value's length not the recorded size (`stored_damage`;
-- `cache-size --verify --fix`, which found it so).
-- Returns the bytes taken off the total, or -1 if nothing was removed.
local bad = namespace_check()
if bad then return bad end
if ARGV[3] == 'orphan' and
    (redis.call('EXISTS', mkey(ARGV[2])) == 1 or redis.call('EXISTS', vkey(ARGV[2])) == 0) then
  return -1
end
if ARGV[3] == 'wrongtype' then
  local t = type_of(vkey(ARGV[2]))
  if t == 'string' or t == 'none' then
    return -1
  end
end
if ARGV[3] == 'damaged' and stored_damage(ARGV[2]) == nil then
  return -1
end
return drop(ARGV[2])
