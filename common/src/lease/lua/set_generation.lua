-- Installs the epoch generation after reconciliation; it only ever grows.
-- ARGV: prefix, generation. Returns the generation in force.
local cur = tonumber(redis.call('GET', P .. 'gen') or '0')
local new = tonumber(ARGV[2])
if new > cur then
  redis.call('SET', P .. 'gen', ARGV[2])
  return ARGV[2]
end
return fmt_int(cur)
