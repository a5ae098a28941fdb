-- Grants the best ready task to an agent.
-- ARGV: prefix, agent, ttl_ms, reap_limit, finished_ttl, class
-- Returns {'granted', id, epoch, deadline_ms, payload} | {'empty'} | {'not_ready'}
-- Every redis.call costs a few microseconds of the single Redis thread, so
-- the hot path keeps them to seven (see `fleet-bench lease-profile`), for
-- either class of agent.
--
-- An agent of class 'vm' pops the VM-only set first and the common set
-- only when it is empty, in one ZMPOP: VM tasks have no one else to serve
-- them, while every agent serves the common set. Priority holds within
-- each set. An agent of any other class (or an older one, without the
-- argument) never sees the VM-only set.
local gen = redis.call('GET', P .. 'gen')
if not gen then
  -- Redis lost its data and the coordinator has not rebuilt it yet (L6):
  -- granting now could reissue an old epoch (L1).
  return {'not_ready'}
end
local agent, ttl = ARGV[2], tonumber(ARGV[3])
local vm = ARGV[6] == 'vm'
local now = now_ms()
local reaped = false
while true do
  local popped
  if vm then
    -- {key, {{id, score}}}, or false when both sets are empty.
    local r = redis.call('ZMPOP', 2, READY_VM, READY, 'MIN')
    popped = r and {r[2][1][1]} or {}
  else
    popped = redis.call('ZPOPMIN', READY)
  end
  if #popped == 0 then
    -- An idle agent reclaims expired leases itself, so recovery does not
    -- wait for the coordinator's reaper tick (or for a coordinator at all).
    if reaped then
      return {'empty'}
    end
    reaped = true
    local requeued = reap(now, tonumber(ARGV[4]), tonumber(ARGV[5]))
    if requeued == 0 then
      return {'empty'}
    end
  else
    local id = popped[1]
    local k = task_key(id)
    local f = redis.call('HMGET', k, 'state', 'grants', 'payload')
    if f[1] == 'queued' then
      local grants = tonumber(f[2]) + 1
      -- L1: the generation is folded into the high bits.
      local epoch = fmt_int(tonumber(gen) * 1048576 + grants)
      local deadline = now + ttl
      redis.call('HSET', k, 'state', 'leased', 'grants', grants, 'epoch', epoch,
        'agent', agent, 'deadline', fmt_int(deadline))
      redis.call('ZADD', LEASES, deadline, id)
      return {'granted', id, epoch, fmt_int(deadline), f[3]}
    end
    -- A ready entry whose task is gone or finished: drop it and look further.
  end
end
