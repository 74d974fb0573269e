-- KEYS[1]: the lock key
-- ARGV[1]: the holder's token
-- ARGV[2]: the new time to live in milliseconds
--
-- Extends the lock only while the key still holds ARGV[1], so a holder whose
-- lock expired never extends the lock of whoever took it next.
-- Returns 1 when extended, 0 when the key is missing or holds another token.
if redis.call("GET", KEYS[1]) == ARGV[1] then
	redis.call("PEXPIRE", KEYS[1], ARGV[2])
	return 1
end
return 0
