-- KEYS[1]: the filter's parameters hash
-- KEYS[2]: the bitmap of the version just built
-- ARGV[1]: spec of the version just built
-- Makes the built version current and keeps the replaced one as 'prev'
-- (with 'prev_since', Redis time in ms), which Add still writes to until
-- its bitmap is deleted. The built bitmap loses the TTL that cleans up
-- after a builder that dies. Returns {status, replaced current spec or '',
-- replaced prev spec or ''} with status 'ok', or 'lost' when another build
-- took the 'next' slot over.
if redis.call('HGET', KEYS[1], 'next') ~= ARGV[1] then
  return {'lost', '', ''}
end
local cur = redis.call('HGET', KEYS[1], 'cur') or ''
local prev = redis.call('HGET', KEYS[1], 'prev') or ''
redis.call('PERSIST', KEYS[2])
redis.call('HSET', KEYS[1], 'cur', ARGV[1])
redis.call('HDEL', KEYS[1], 'next', 'next_since')
if cur ~= '' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('HSET', KEYS[1], 'prev', cur, 'prev_since', tostring(now))
else
  redis.call('HDEL', KEYS[1], 'prev', 'prev_since')
end
return {'ok', cur, prev}
