-- KEYS[1]: the cache key
-- ARGV[1]: the plain tombstone to set; '' deletes the key instead
-- ARGV[2]: the plain tombstone's time to live, milliseconds
-- ARGV[3]: the versioned tombstone to set instead when the key carries a
--          row version: magic, format version, kind byte with the version
--          bit, 8 bytes (4 to 11) that are replaced by the key's row
--          version, then the rest of its header
-- ARGV[4]: the versioned tombstone's time to live, milliseconds
-- Removes whatever the key holds (a value, a lease, another type), so that
-- no load that began before can fill. If the key holds an entry carrying a
-- row version above 0 (a versioned tombstone, a lease taken over one, a
-- value that recorded its version), that version stays as the floor of a
-- versioned tombstone and 2 is returned; otherwise the key is deleted or
-- gets the plain tombstone and 1 is returned.
local cur = redis.pcall('GET', KEYS[1])
if type(cur) == 'string' and #cur >= 11 and string.byte(cur, 1) == 0xCA
    and string.byte(cur, 2) == 1 and string.byte(cur, 3) >= 0x80
    and string.sub(cur, 4, 11) ~= string.rep('\0', 8) then
  local new = ARGV[3]
  new = string.sub(new, 1, 3) .. string.sub(cur, 4, 11) .. string.sub(new, 12)
  redis.call('SET', KEYS[1], new, 'PX', ARGV[4])
  return 2
end
if ARGV[1] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return 1
