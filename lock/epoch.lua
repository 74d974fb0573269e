-- KEYS[1]: the election's epoch key
--
-- Returns the next fencing epoch: the counter after INCR, 1 on first use.
-- A script rather than a plain INCR so the package needs nothing but
-- redis.Scripter from its client.
return redis.call("INCR", KEYS[1])
