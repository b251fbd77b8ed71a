-- Release the lock only if the caller's token still holds it, and wake one
-- waiter through the lock's wake-up list (it expires, so a wake-up nobody
-- takes does not linger).
-- KEYS: lock, holder, wake. ARGV: token, wake_ttl_ms.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
  redis.call('RPUSH', KEYS[3], '1')
  redis.call('PEXPIRE', KEYS[3], ARGV[2])
  return 1
end
return 0
