local token = ARGV[2]
local exp = nil
if token ~= '' then exp = redis.call('ZSCORE', KEYS[1], ARGV[1] .. '#' .. token) end
if (not exp) or tonumber(exp) <= now then
  local n = redis.call('INCR', KEYS[3])
  if n < now then n = now; redis.call('SET', KEYS[3], string.format('%d', n)) end
  token = string.format('%d', n)
end
local name = ARGV[1] .. '#' .. token
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), name)
redis.call('HSET', KEYS[2], name, ARGV[4])
local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 16)
return {token, live, dead}
