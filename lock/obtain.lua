-- KEYS[1]: the lock key
-- ARGV[1]: the holder's token
-- ARGV[2]: the time to live in milliseconds
--
-- Takes the lock when the key is free. When the key already holds this very
-- token (a retried call whose first reply was lost, or a holder that obtains
-- again with its own token), it resets the time to live and succeeds too.
-- Returns 1 when the key holds ARGV[1] for ARGV[2] ms, 0 when another token holds it.
if redis.call("SET", KEYS[1], ARGV[1], "NX", "PX", ARGV[2]) then
	return 1
end
if redis.call("GET", KEYS[1]) == ARGV[1] then
	redis.call("PEXPIRE", KEYS[1], ARGV[2])
	return 1
end
return 0
