-- Take the lock if it is free: SET NX PX with the caller's random token,
-- bump the fencing counter, and write the holder record beside the lock
-- with the same lease.
-- A token whose acquisition was given up (lock_cancel.lua: the caller
-- timed out and cannot know whether this ran) never takes the lock, and a
-- token that already holds it gets its own fence back (a retry after an
-- uncertain first try).
-- The fence is max(counter + 1, server time in ms * 1024): it grows by one
-- per acquisition, and jumps to the clock when the counter is behind it,
-- so a counter restored from an older snapshot, lost with a restart, or
-- behind on a promoted replica still hands out tokens above every token
-- given before (as long as the clock moved on by 1 ms and no lock was
-- taken 1024 times in one ms). Below 2^53: exact in Lua's doubles.
-- KEYS: lock, holder, fence, cancel. ARGV: token, lease_ms, then holder
-- field/value pairs.
-- Returns {1, fence} (taken), {0, pttl} (busy) or {-1, 0} (cancelled).
if redis.call('EXISTS', KEYS[4]) == 1 then
  return {-1, 0}
end
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  return {1, tonumber(redis.call('HGET', KEYS[2], 'fence') or '0')}
end
if cur then
  return {0, redis.call('PTTL', KEYS[1])}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local t = redis.call('TIME')
local floor = (tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)) * 1024
local fence = tonumber(redis.call('GET', KEYS[3]) or '0') + 1
if fence < floor then
  fence = floor
end
redis.call('SET', KEYS[3], string.format('%.0f', fence))
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'token', ARGV[1], 'fence', string.format('%.0f', fence), unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return {1, fence}
