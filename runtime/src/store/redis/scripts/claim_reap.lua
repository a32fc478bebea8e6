local exp = redis.call('ZSCORE', KEYS[1], ARGV[1])
if (not exp) or tonumber(exp) > now then return false end
local claim = redis.call('HGET', KEYS[3], ARGV[1])
if claim then
  local who, untl = string.match(claim, '^(.*) (%d+)$')
  if who and who ~= ARGV[2] and tonumber(untl) > now then return false end
end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2] .. ' ' .. string.format('%d', now + tonumber(ARGV[3])))
return redis.call('HGET', KEYS[2], ARGV[1]) or '0'
