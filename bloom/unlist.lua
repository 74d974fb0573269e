-- KEYS[1]: the filter's parameters hash
-- ARGV[1]: spec of a version whose bitmap has been deleted
-- Removes the version from 'prev' or 'next' if it is still there, with its
-- add sequence. Callers delete the bitmap first, so a reader that still
-- holds the old parameters finds no bitmap (and answers "may contain")
-- rather than a stale one. Returns the number of fields removed.
local n = 0
if redis.call('HGET', KEYS[1], 'prev') == ARGV[1] then
  n = n + redis.call('HDEL', KEYS[1], 'prev', 'prev_since')
end
if redis.call('HGET', KEYS[1], 'next') == ARGV[1] then
  n = n + redis.call('HDEL', KEYS[1], 'next', 'next_since')
end
if n > 0 then
  redis.call('HDEL', KEYS[1], 'seq:' .. string.match(ARGV[1], '^%d+'))
end
return n
