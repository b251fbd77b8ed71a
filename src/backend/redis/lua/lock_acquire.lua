-- Take the lock if it is free: SET NX PX with the caller's random token,
-- bump the fencing counter, and write the holder record beside the lock
-- with the same lease.
-- The counter never expires; when it is missing (first use, or a server
-- restarted without persistence) it starts from the server clock in
-- microseconds, so fencing tokens keep growing across a restart.
-- KEYS: lock, holder, fence. ARGV: token, lease_ms, then holder field/value pairs.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  if redis.call('EXISTS', KEYS[3]) == 0 then
    local t = redis.call('TIME')
    redis.call('SET', KEYS[3], string.format('%d', tonumber(t[1]) * 1000000 + tonumber(t[2])))
  end
  local fence = redis.call('INCR', KEYS[3])
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[2], 'token', ARGV[1], 'fence', fence, unpack(ARGV, 3))
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return {1, fence}
end
return {0, redis.call('PTTL', KEYS[1])}
