-- Reads entry ARGV[2]: {1, value, created_at, now, hits} on a hit (and
-- refreshes its recency; {4, size, …} for a large value, below),
-- {2, expires_at, created_at, now} when expired (and drops it, adjusting
-- the total), {3, now, kind, ...} when damaged (below), {0} when missing.
-- ARGV: prefix, key, now (or ''), mode: '' (cache-read), 'hit' (cache-run
-- replays it: count the replay in the metadata's `hits`, which a rewrite
-- clears) or 'peek' (change nothing: no recency, no expiry, no count).
--
-- Damage: the scripts write a value and its record in one atomic step, so
-- a record field that is missing or not a canonical number, a metadata
-- key that is not a hash, a value key that is missing or not a string, or
-- a value whose length is not the recorded size was changed behind
-- ffkit's back (a SETRANGE, a SET, an HSET, an RPUSH, a partial restore).
-- Its bytes are never returned as good; the check costs no extra round
-- trip (the length of the string this script already holds). Unless
-- peeking, the read that finds the damage drops the entry in the same step
-- (`drop`: the value, the metadata and the totals together), so the next
-- read is a miss. The kinds, after {3, now}:
--   'field', name, the value (at most 64 bytes; false: missing), its length
--   'metadata', the metadata key's type
--   'value', the value key's type ('none': missing)
--   'length', recorded size, the value's length
--   'orphan': a value key without its metadata key (deleted by hand)
-- A namespace-wide key that is damaged (`namespace_check`) is an error
-- reply before anything is read or written.
-- The read itself is `read_entry` (cache_read_entry.lua).
local bad = namespace_check()
if bad then return bad end
return read_entry(ARGV[2], now_of(ARGV[3]), ARGV[4] or '', nil)
