redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
local wrote = record_end(KEYS[2], KEYS[4], ARGV[2])
sync_view(KEYS[3], KEYS[2], KEYS[4], KEYS[5])
return wrote
