local exp = redis.call('ZSCORE', KEYS[1], ARGV[1])
if exp and tonumber(exp) <= now then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('HDEL', KEYS[3], ARGV[1])
end
return 1
