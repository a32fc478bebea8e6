local wrote = max_into(KEYS[1], ARGV[1])
local p = redis.call('GET', KEYS[2])
if p and ((not wf(p)) or p <= redis.call('GET', KEYS[1])) then redis.call('DEL', KEYS[2]) end
sync_view(KEYS[3], KEYS[1], KEYS[2], KEYS[4])
return wrote
