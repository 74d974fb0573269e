-- KEYS[1]: the cache key
-- ARGV[1]: the bytes the caller last saw in the key ('' when it saw none)
-- ARGV[2]: the lease entry to install
-- ARGV[3]: the lease's time to live, milliseconds
-- ARGV[4]: '1' for strict mode: install only over exactly ARGV[1], never
--          into an absent key
-- ARGV[5]: when ARGV[1] is a versioned tombstone, the life its header
--          gives the floor after its hold, milliseconds; '' otherwise
-- Installs the lease when the key is absent (not in strict mode) or still
-- holds exactly ARGV[1] (a stale, corrupt or expiring entry the caller
-- decided to replace) and returns 1. Otherwise returns the key's current
-- bytes, so the caller can act on what replaced the entry it saw (a value,
-- another process's lease, a tombstone) without another round trip, or 0
-- when the key is absent. Returns -1, installing nothing, when the key
-- still holds ARGV[1] and that versioned tombstone's hold is not over:
-- its time to live exceeds the floor's own life. Redis's clock decides,
-- not the caller's, which may run ahead of the writer's.
local cur = redis.call('GET', KEYS[1])
if cur and cur == ARGV[1] and ARGV[5] and ARGV[5] ~= ''
    and redis.call('PTTL', KEYS[1]) > tonumber(ARGV[5]) then
  return -1
end
if (cur and cur == ARGV[1]) or (not cur and ARGV[4] ~= '1') then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
if not cur then
  return 0
end
return cur
