-- KEYS[1]: the filter's parameters hash
-- KEYS[2..n+1]: the bitmap of each of n versions
-- ARGV[1]: the channel for add messages
-- ARGV[2]: 'SPUBLISH' (Redis Cluster: the channel lives in the keys' slot) or 'PUBLISH'
-- ARGV[3], ARGV[4], ...: for each version in KEYS order, its spec
--   ("id:m:k:hash") and the bit offsets (SETBIT numbering) to set, as
--   decimals separated by spaces
-- For each version still listed in the hash (cur, next or prev) whose
-- bitmap exists: sets the bits, increments the version's add sequence
-- (field 'seq:<id>') and publishes 'a <id> <seq> <offsets>'. Publishing
-- here, after the write and in the same atomic step, puts every version's
-- adds on the channel in sequence order, so a copy that misses one sees a
-- gap. A version no longer listed or whose bitmap is missing is not
-- written (SETBIT would create a fresh, nearly empty bitmap that readers
-- would then trust): then, and whenever no version is current, 'g' is
-- published, so that local copies that may still hold a version that is
-- gone stop answering and reload.
-- Returns {statuses, hash}: per version 1 (written), 0 (bitmap missing)
-- or -1 (not listed); and the hash as HGETALL returns it.
local listed = {}
for _, field in ipairs({'cur', 'next', 'prev'}) do
  local spec = redis.call('HGET', KEYS[1], field)
  if spec then
    listed[spec] = true
  end
end
local reload = redis.call('HEXISTS', KEYS[1], 'cur') == 0
local statuses = {}
for i = 2, #KEYS do
  local spec, offsets = ARGV[2 * i - 1], ARGV[2 * i]
  local status = -1
  if listed[spec] then
    status = redis.call('EXISTS', KEYS[i])
  end
  if status == 1 then
    for offset in string.gmatch(offsets, '%d+') do
      redis.call('SETBIT', KEYS[i], offset, 1)
    end
    local id = string.match(spec, '^%d+')
    local seq = redis.call('HINCRBY', KEYS[1], 'seq:' .. id, 1)
    redis.call(ARGV[2], ARGV[1], 'a ' .. id .. ' ' .. seq .. ' ' .. offsets)
  else
    reload = true
  end
  statuses[#statuses + 1] = status
end
if reload then
  redis.call(ARGV[2], ARGV[1], 'g')
end
return {statuses, redis.call('HGETALL', KEYS[1])}
