-- KEYS[1]: the checkpoint, a hash (fields epoch, owner, seq, pos, server)
-- ARGV[1]: the owner's lock token, as claimed
-- ARGV[2]: the seq this owner last wrote ("0" right after the claim)
-- ARGV[3]: the Redis run_id seen at the claim
-- ARGV[4]: the new position, as Position.String formats it
-- ARGV[5]: the identity of the server the position belongs to
--
-- Compare-and-set: moves the position only while the record is exactly as
-- this owner left it and the server is the one it claimed on. Returns the
-- new seq, or a reason for refusing:
--   -1 the record is gone (Redis lost it: FLUSHALL, a restart without data)
--   -2 another leadership claimed it since
--   -3 it went back in time (a failover or an AOF that lost its last writes)
--   -4 Redis restarted or failed over since the claim: writes acknowledged
--      before may be lost although the record survived
local v = redis.call('HMGET', KEYS[1], 'owner', 'seq')
if not v[1] then
  return -1
end
if v[1] ~= ARGV[1] then
  return -2
end
if v[2] ~= ARGV[2] then
  return -3
end
if string.match(redis.call('INFO', 'server'), 'run_id:(%x+)') ~= ARGV[3] then
  return -4
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('HSET', KEYS[1], 'pos', ARGV[4], 'server', ARGV[5])
return seq
