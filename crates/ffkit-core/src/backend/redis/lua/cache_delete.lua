-- Removes entry ARGV[2] (cache-run --invalidate), adjusting the total.
-- ARGV: prefix, key. Returns the value's bytes, or -1 if there was none.
return drop(ARGV[2])
