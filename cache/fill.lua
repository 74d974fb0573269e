-- KEYS[1]: the cache key
-- ARGV[1]: the caller's lease: its header and token (a prefix of the entry)
-- ARGV[2]: the entry to store; '' deletes the key instead (gives the lease back)
-- ARGV[3]: the entry's time to live, milliseconds
-- Acts only while the key still holds the caller's lease and returns 1;
-- otherwise returns 0. An invalidation since the lease was taken deleted or
-- replaced it, so a value read before that invalidation is never stored.
local cur = redis.call('GET', KEYS[1])
if not cur or string.sub(cur, 1, #ARGV[1]) ~= ARGV[1] then
  return 0
end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
