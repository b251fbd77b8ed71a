-- Give up an acquisition whose outcome is unknown (its reply timed out):
-- mark the token cancelled, so that the acquire script, if it is still on
-- its way or queued behind a stalled server, does not take the lock; and
-- if it already did, release it (waking a waiter), as redsync does.
-- KEYS: lock, holder, wake, cancel. ARGV: token, wake_ttl_ms, cancel_ttl_ms.
redis.call('SET', KEYS[4], '1', 'PX', ARGV[3])
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
  redis.call('RPUSH', KEYS[3], '1')
  redis.call('PEXPIRE', KEYS[3], ARGV[2])
  return 1
end
return 0
