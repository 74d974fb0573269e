-- KEYS[1]: the bitmap of one filter version
-- ARGV[1]: bit offsets (SETBIT numbering) as decimals separated by spaces
-- Returns 1 when every bit is set, 0 when one is clear, and -1 when the
-- bitmap is missing: GETBIT answers 0 for a missing key, and a deleted or
-- dropped bitmap must never read as "absent".
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
for offset in string.gmatch(ARGV[1], '%d+') do
  if redis.call('GETBIT', KEYS[1], offset) == 0 then
    return 0
  end
end
return 1
