-- Corrects the total and the entry count by the drift a verify measured
-- (cache-size --verify --fix / --rebuild): adding the difference, rather
-- than setting the recount, stays right when writers changed the totals
-- since the measurement (each adjusted them by its own exact change).
-- ARGV: prefix, bytes delta, entries delta.
local bad = namespace_check()
if bad then return bad end
add(TOTAL, tonumber(ARGV[2]))
add(COUNT, tonumber(ARGV[3]))
return 1
