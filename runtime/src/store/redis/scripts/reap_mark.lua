if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
record_end(KEYS[2], KEYS[3], ARGV[3])
sync_view(KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return 1
