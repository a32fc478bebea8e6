redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return record_end(KEYS[2], KEYS[4], ARGV[2])
