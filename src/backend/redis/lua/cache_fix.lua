-- Sets the total and the entry count to recomputed values (cache-size
-- --verify --fix / --rebuild).
-- ARGV: prefix, bytes, entries.
redis.call('SET', TOTAL, ARGV[2])
redis.call('SET', COUNT, ARGV[3])
return 1
