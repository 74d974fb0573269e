-- KEYS[1]: the checkpoint, a hash (fields epoch, owner, seq, pos, server)
-- KEYS[2]: the leader lock, which must hold ARGV[1]
-- ARGV[1]: the claiming leadership's lock token
--
-- Starts a leadership on the checkpoint: counts it in the record's own
-- epoch, makes ARGV[1] the owner with seq 0, and returns
-- {epoch, pos, server, run_id} (pos and server "" when the record held no
-- position: first start, or Redis lost the record). Returns nil, changing
-- nothing, when the lock does not hold ARGV[1]. The epoch lives in the
-- record, so the record and its epoch are lost or kept together.
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return false
end
local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'seq', '0')
local v = redis.call('HMGET', KEYS[1], 'pos', 'server')
local run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
return {tostring(epoch), v[1] or '', v[2] or '', run or ''}
