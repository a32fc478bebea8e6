redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
sync_view(KEYS[1], KEYS[3], KEYS[4], KEYS[5])
return 1
