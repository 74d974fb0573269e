-- KEYS[1]: a generation key (<Prefix>gen:<namespace> or <Prefix>gen)
-- ARGV: none
-- Raises the generation to max(current + 1, Redis time in milliseconds) and
-- returns it. The clock keeps every bump above all earlier values even when
-- Redis lost the key and a process still remembers a high generation.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cur = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local n = math.max(cur + 1, now)
redis.call('SET', KEYS[1], string.format('%.0f', n))
return n
