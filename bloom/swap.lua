-- KEYS[1]: the filter's parameters hash
-- ARGV[1]: spec of the version just built
-- Makes the built version current and keeps the replaced one as 'prev',
-- which Add still writes to until its bitmap is deleted. Returns
-- {status, replaced current spec or '', replaced prev spec or ''} with
-- status 'ok', or 'lost' when another build took the 'next' slot over.
if redis.call('HGET', KEYS[1], 'next') ~= ARGV[1] then
  return {'lost', '', ''}
end
local cur = redis.call('HGET', KEYS[1], 'cur') or ''
local prev = redis.call('HGET', KEYS[1], 'prev') or ''
redis.call('HSET', KEYS[1], 'cur', ARGV[1])
redis.call('HDEL', KEYS[1], 'next', 'next_since')
if cur ~= '' then
  redis.call('HSET', KEYS[1], 'prev', cur)
else
  redis.call('HDEL', KEYS[1], 'prev')
end
return {'ok', cur, prev}
