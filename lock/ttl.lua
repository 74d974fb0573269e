-- KEYS[1]: the lock key
-- ARGV[1]: the holder's token
--
-- Returns the key's PTTL in milliseconds while it holds ARGV[1] (-1 for a key
-- without expiry), and -2 when the key is missing or holds another token.
if redis.call("GET", KEYS[1]) == ARGV[1] then
	return redis.call("PTTL", KEYS[1])
end
return -2
