local function wf(v)
  return v and string.len(v) == 24 and string.find(v, '^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$') ~= nil
end
local function max_into(key, ts)
  local cur = redis.call('GET', key)
  if wf(cur) and cur >= ts then return 0 end
  redis.call('SET', key, ts)
  return 1
end
local function record_end(cache, pending, ts)
  if wf(redis.call('GET', cache)) then return max_into(cache, ts) end
  return max_into(pending, ts)
end
