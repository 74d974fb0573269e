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
-- A hold in the key (a plain tombstone, or a versioned one whose time to
-- live exceeds the floor's own life: WriteStrong, TombstoneTTL) is kept:
-- the new tombstone lives that much longer, and its header's ttl (the
-- floor's own life) stays ARGV[2], so readers still see the hold (see
-- lease.lua). Replacing it would let a reader fill the old row while the
-- write runs.
local new = ARGV[1]
local cur = redis.pcall('GET', KEYS[1])
local px = tonumber(ARGV[2])

-- uvarint reads the unsigned varint at byte i of s; it returns the value
-- and the index after it, or nil for bytes that end too soon.
local function uvarint(s, i)
  local n, m = 0, 1
  while true do
    local b = string.byte(s, i)
    if not b then
      return nil, i
    end
    i = i + 1
    n = n + (b % 128) * m
    if b < 128 then
      return n, i
    end
    m = m * 128
  end
end

if type(cur) == 'string' and #cur >= 3 and string.byte(cur, 1) == 0xCA and string.byte(cur, 2) == 1 then
  local kind, hold = string.byte(cur, 3), 0
  if kind == 0x04 then
    hold = redis.call('PTTL', KEYS[1])
  elseif kind == 0x84 then
    -- header after the row version: nsGen, allGen, filled, ttl
    local v, i = nil, 12
    for _ = 1, 4 do
      if i then
        v, i = uvarint(cur, i)
      end
      if not v then
        i = nil
      end
    end
    if v then
      hold = redis.call('PTTL', KEYS[1]) - v
    end
  end
  if hold > 0 then
    px = px + hold
  end
end
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
redis.call('SET', KEYS[1], new, 'PX', px)
return 1
