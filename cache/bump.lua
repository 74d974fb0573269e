-- KEYS[1]: a generation key (<Prefix>gen:<namespace> or <Prefix>gen)
-- ARGV[1]: the highest value of this generation the bumping process knows
-- Raises the generation to max(current + 1, ARGV[1] + 1, Redis time in
-- microseconds) and returns it. If Redis lost the key, the caller's floor
-- keeps the bump above every value the caller has seen, and the clock keeps
-- it above every value any process has seen: a bump is a script run of more
-- than a microsecond, so bumps never run ahead of a microsecond clock.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cur = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local floor = tonumber(ARGV[1]) or 0
local n = math.max(cur + 1, floor + 1, now)
redis.call('SET', KEYS[1], string.format('%.0f', n))
return n
