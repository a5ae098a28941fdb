-- Grants the best ready task to an agent.
-- ARGV: prefix, agent, ttl_ms, reap_limit, finished_ttl
-- Returns {'granted', id, epoch, deadline_ms, payload} | {'empty'} | {'not_ready'}
local gen = redis.call('GET', P .. 'gen')
if not gen then
  -- Redis lost its data and the coordinator has not rebuilt it yet (L6):
  -- granting now could reissue an old epoch (L1).
  return {'not_ready'}
end
local agent, ttl = ARGV[2], tonumber(ARGV[3])
local now = now_ms()
-- Reclaim expired leases here too, so recovery does not wait for the
-- coordinator's reaper tick (or for a coordinator at all).
reap(now, tonumber(ARGV[4]), tonumber(ARGV[5]))
redis.call('ZADD', P .. 'agents', now, agent)
while true do
  local popped = redis.call('ZPOPMIN', READY)
  if #popped == 0 then
    return {'empty'}
  end
  local id = popped[1]
  local k = task_key(id)
  if redis.call('HGET', k, 'state') == 'queued' then
    local grants = redis.call('HINCRBY', k, 'grants', 1)
    -- L1: the generation is folded into the high bits.
    local epoch = fmt_int(tonumber(gen) * 1048576 + grants)
    local deadline = now + ttl
    redis.call('HSET', k, 'state', 'leased', 'epoch', epoch, 'agent', agent, 'deadline', fmt_int(deadline))
    redis.call('ZADD', LEASES, deadline, id)
    redis.call('HINCRBY', STATS, 'granted', 1)
    return {'granted', id, epoch, fmt_int(deadline), redis.call('HGET', k, 'payload')}
  end
  -- A ready entry whose task is gone or finished: drop it and look further.
end
