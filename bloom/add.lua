-- KEYS[1]: the bitmap of one filter version
-- ARGV[1]: bit offsets (SETBIT numbering) to set, as decimals separated by spaces
-- Returns 1, or 0 without writing when the bitmap is missing: SETBIT would
-- create a fresh, nearly empty bitmap that readers would then trust.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
for offset in string.gmatch(ARGV[1], '%d+') do
  redis.call('SETBIT', KEYS[1], offset, 1)
end
return 1
