-- KEYS[1]: the checkpoint, a hash with fields epoch and pos
-- ARGV[1]: the writer's epoch, a decimal uint64 without leading zeros
-- ARGV[2]: the position, as Position.String formats it
-- Returns 1 when saved, 0 when the stored epoch is greater (the write is refused).
-- Epochs are compared as decimal strings (length, then bytes): Lua numbers
-- are doubles and would round epochs above 2^53.
local cur = redis.call('HGET', KEYS[1], 'epoch')
if cur then
  if #cur > #ARGV[1] or (#cur == #ARGV[1] and cur > ARGV[1]) then
    return 0
  end
end
redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'pos', ARGV[2])
redis.call('HDEL', KEYS[1], 'owner')
return 1
