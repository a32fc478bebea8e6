if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
record_end(KEYS[2], KEYS[3], ARGV[3])
return 1
