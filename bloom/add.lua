-- KEYS[1]: the bitmap of one filter version
-- ARGV: bit offsets (SETBIT numbering) to set
-- Returns 1, or 0 without writing when the bitmap is missing: SETBIT would
-- create a fresh, nearly empty bitmap that readers would then trust.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
for i = 1, #ARGV do
  redis.call('SETBIT', KEYS[1], ARGV[i], 1)
end
return 1
