-- KEYS[1]: the cache key
-- ARGV[1]: the versioned tombstone to set: magic, format version, kind byte
--          with the version bit, then its 8-byte big-endian row version
--          (bytes 4 to 11), then the rest of its header
-- ARGV[2]: its time to live, milliseconds
-- Sets the tombstone, replacing whatever the key holds (a value, a lease,
-- another type), so that no load that began before it can fill. The floor
-- never goes down: if the key holds an entry carrying a higher row version
-- (a versioned tombstone, a lease taken over one, a value that recorded its
-- version), a tombstone stays at that version. A versioned tombstone already
-- at a higher version is left as it is and 0 is returned; otherwise 1.
local new = ARGV[1]
local cur = redis.pcall('GET', KEYS[1])
if type(cur) == 'string' and #cur >= 11 and string.byte(cur, 1) == 0xCA
    and string.byte(cur, 2) == 1 and string.byte(cur, 3) >= 0x80 then
  local higher = false
  for i = 4, 11 do
    local a, b = string.byte(cur, i), string.byte(new, i)
    if a ~= b then
      higher = a > b
      break
    end
  end
  if higher then
    if string.byte(cur, 3) == 0x84 then
      return 0
    end
    new = string.sub(new, 1, 3) .. string.sub(cur, 4, 11) .. string.sub(new, 12)
  end
end
redis.call('SET', KEYS[1], new, 'PX', ARGV[2])
return 1
