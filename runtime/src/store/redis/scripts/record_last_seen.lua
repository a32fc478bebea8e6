local wrote = record_end(KEYS[1], KEYS[2], ARGV[1])
sync_view(KEYS[3], KEYS[1], KEYS[2], KEYS[4])
return wrote
