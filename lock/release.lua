-- KEYS[1]: the lock key
-- ARGV[1]: the holder's token
--
-- Deletes the key only while it still holds ARGV[1], so a holder whose lock
-- expired never releases the lock of whoever took it next.
-- Returns 1 when released, 0 when the key is missing or holds another token.
if redis.call("GET", KEYS[1]) == ARGV[1] then
	return redis.call("DEL", KEYS[1])
end
return 0
