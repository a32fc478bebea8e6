local function sync_view(lease, cache, pending, view)
  local t = redis.call('HVALS', lease)
  table.sort(t)
  local c = redis.call('GET', cache)
  local p = redis.call('GET', pending)
  if not wf(c) then c = '' end
  if not wf(p) then p = '' end
  if #t == 0 and c == '' and p == '' then
    redis.call('DEL', view)
  else
    redis.call('SET', view, table.concat(t, ' ') .. '|' .. c .. '|' .. p)
  end
end
