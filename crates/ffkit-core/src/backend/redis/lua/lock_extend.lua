-- Renew the lease only if the caller's token still holds the lock, and
-- optionally add fields to the holder record.
-- KEYS: lock, holder. ARGV: token, lease_ms, then holder field/value pairs.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  if #ARGV > 2 then
    redis.call('HSET', KEYS[2], unpack(ARGV, 3))
  end
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return 1
end
return 0
