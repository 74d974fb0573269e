-- KEYS[1]: the bitmap of one filter version
-- ARGV: bit offsets (SETBIT numbering)
-- Returns 1 when every bit is set, 0 when one is clear, and -1 when the
-- bitmap is missing: GETBIT answers 0 for a missing key, and a deleted or
-- dropped bitmap must never read as "absent".
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
for i = 1, #ARGV do
  if redis.call('GETBIT', KEYS[1], ARGV[i]) == 0 then
    return 0
  end
end
return 1
