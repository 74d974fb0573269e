-- KEYS[1]: the filter's parameters hash
-- ARGV[1]: spec of the version to build ("id:m:k:hash")
-- ARGV[2]: storage format this client writes
-- ARGV[3]: build timeout in milliseconds (an older build may be replaced)
-- ARGV[4]: "1" to build only when no version is current (Warm)
-- Announces ARGV[1] as the version being built, so that every Add from now
-- on writes to it as well. Returns {status, detail}:
--   {'ok', spec of a replaced stale build or ''}, {'current', ''},
--   {'busy', spec of the running build}, {'format', stored format}.
local format = redis.call('HGET', KEYS[1], 'format')
if format and format ~= ARGV[2] then
  return {'format', format}
end
if ARGV[4] == '1' and redis.call('HEXISTS', KEYS[1], 'cur') == 1 then
  return {'current', ''}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local building = redis.call('HGET', KEYS[1], 'next')
if building then
  local since = tonumber(redis.call('HGET', KEYS[1], 'next_since') or '0') or 0
  if now - since < tonumber(ARGV[3]) then
    return {'busy', building}
  end
end
redis.call('HSET', KEYS[1], 'format', ARGV[2], 'next', ARGV[1], 'next_since', tostring(now))
return {'ok', building or ''}
