-- Shared by every lease script. ARGV[1] is always the key prefix.
-- Time comes only from Redis (DESIGN L2): scripts call TIME, never trust a
-- client clock. Epochs are exact integers below 2^53 and are formatted with
-- %d, never through cjson (which rounds to 14 digits).
local P = ARGV[1]
local READY = P .. 'ready'
-- Tasks only a VM can serve wait apart, so an agent on containers never
-- pops them (issue 24). A task's hash says which set is its own (`need`).
local READY_VM = P .. 'ready:vm'
local LEASES = P .. 'leases'
local STATS = P .. 'stats'
local EVENTS = P .. 'events'

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function task_key(id)
  return P .. 't:' .. id
end

local function fmt_int(n)
  return string.format('%d', n)
end

-- The ready set of a task whose `need` field is `need` ('vm' or
-- 'container'; absent in tasks enqueued before the field existed).
local function ready_for(need)
  if need == 'vm' then
    return READY_VM
  end
  return READY
end

-- Held tasks wait for an ordering group to shrink to their threshold.
local function release_held(group, pending)
  local held = P .. 'held:' .. group
  local ids = redis.call('ZRANGEBYSCORE', held, pending, '+inf')
  for _, id in ipairs(ids) do
    redis.call('ZREM', held, id)
    local k = task_key(id)
    redis.call('HSET', k, 'state', 'queued')
    local f = redis.call('HMGET', k, 'score', 'need')
    redis.call('ZADD', ready_for(f[2]), f[1], id)
  end
end

-- A task left the queue for good (done or dead): its groups shrink.
local function leave_groups(k, groups, finished_ttl)
  for g in string.gmatch(groups or '', '[^\t]+') do
    local pending = redis.call('DECR', P .. 'grp:' .. g)
    release_held(g, pending)
  end
  redis.call('EXPIRE', k, finished_ttl)
end

-- Appends an event made by a script (agent `coordinator`) about task `id`.
-- `f` holds the task's run, rule and epoch; `body` is the body's JSON.
local function append_script_event(id, kind, f, now, body)
  local seq = redis.call('HINCRBY', STATS, 'coordinator_seq', 1)
  local ev = '{"v":1,"id":' .. cjson.encode(kind .. '-' .. id .. '-' .. f.epoch)
    .. ',"run":' .. f.run .. ',"task":' .. id
    .. ',"rule":' .. cjson.encode(f.rule)
    .. ',"agent":"coordinator","incarnation":0,"epoch":' .. f.epoch
    .. ',"attempt":0,"seq":' .. fmt_int(seq) .. ',"ts_ms":' .. fmt_int(now)
    .. ',"body":' .. body .. '}'
  redis.call('XADD', EVENTS, '*', 'e', ev)
end

-- Reclaims one expired lease (DESIGN L5): back to the queue, or dead-letter
-- with an escalated/lease_lost outcome once the loss budget is spent. Either
-- way the loss is recorded as a lease_reclaimed event, so Postgres counts
-- lease losses apart from failed attempts.
-- Returns 'requeued', 'dead' or 'skipped'.
local function reclaim(id, now, finished_ttl)
  local k = task_key(id)
  redis.call('ZREM', LEASES, id)
  local h = redis.call('HMGET', k, 'state', 'budget', 'run', 'rule', 'epoch', 'agent', 'score', 'groups', 'need')
  if h[1] ~= 'leased' then
    return 'skipped'
  end
  local f = {run = h[3], rule = h[4], epoch = h[5]}
  local losses = redis.call('HINCRBY', k, 'losses', 1)
  redis.call('HINCRBY', STATS, 'reclaimed', 1)
  append_script_event(id, 'reclaim', f, now, '{"type":"lease_reclaimed","holder":'
    .. cjson.encode(h[6]) .. ',"losses":' .. fmt_int(losses) .. '}')
  if losses >= tonumber(h[2]) then
    redis.call('HSET', k, 'state', 'dead', 'finished_ms', fmt_int(now))
    append_script_event(id, 'reap', f, now, '{"type":"task_completed","outcome":'
      .. '{"kind":"escalated","reason":"lease_lost"},"attempts":0,"duration_ms":0}')
    redis.call('HINCRBY', STATS, 'dead_lettered', 1)
    leave_groups(k, h[8], finished_ttl)
    return 'dead'
  end
  redis.call('HSET', k, 'state', 'queued')
  redis.call('ZADD', ready_for(h[9]), h[7], id)
  return 'requeued'
end

-- Reclaims up to `limit` leases whose deadline has passed.
-- Returns the numbers requeued and dead-lettered.
local function reap(now, limit, finished_ttl)
  local requeued, dead = 0, 0
  local ids = redis.call('ZRANGEBYSCORE', LEASES, '-inf', now, 'LIMIT', 0, limit)
  for _, id in ipairs(ids) do
    local r = reclaim(id, now, finished_ttl)
    if r == 'dead' then
      dead = dead + 1
    elseif r == 'requeued' then
      requeued = requeued + 1
    end
  end
  return requeued, dead
end

-- Accepts a completion iff it carries the task's current epoch and the lease
-- is still live by Redis time (DESIGN L3); acceptance and appending the
-- outcome event are one step. A refused completion is counted and its event
-- recorded with a `rejected` field, never applied.
-- Returns {'accepted'} | {'duplicate'} | {'rejected', reason}
local function complete_task(id, epoch, agent, ev, finished_ttl, now)
  local k = task_key(id)
  local f = redis.call('HMGET', k, 'state', 'epoch', 'agent', 'deadline', 'groups')
  -- A retried call whose first try succeeded (reply lost) must not count twice.
  if f[1] == 'done' and f[2] == epoch and f[3] == agent then
    return {'duplicate'}
  end
  local reason = nil
  if not f[1] then reason = 'unknown_task'
  elseif f[1] ~= 'leased' then reason = 'not_leased'
  elseif f[2] ~= epoch then reason = 'stale_epoch'
  elseif f[3] ~= agent then reason = 'wrong_agent'
  elseif tonumber(f[4]) <= now then reason = 'expired'
  end
  if reason then
    if reason == 'expired' then
      reclaim(id, now, finished_ttl)
    end
    redis.call('HINCRBY', STATS, 'stale_rejected', 1)
    redis.call('XADD', EVENTS, '*', 'e', ev, 'rejected', reason)
    return {'rejected', reason}
  end
  redis.call('HSET', k, 'state', 'done', 'finished_ms', fmt_int(now))
  redis.call('ZREM', LEASES, id)
  redis.call('XADD', EVENTS, '*', 'e', ev)
  leave_groups(k, f[5], finished_ttl)
  return {'accepted'}
end

-- Grants the best ready task to `agent` (lease.lua, complete_lease.lua).
-- Returns {'granted', id, epoch, deadline_ms, payload} | {'empty'} | {'not_ready'}
-- Every redis.call costs a few microseconds of the single Redis thread, so
-- the hot path keeps them to six besides TIME (see `fleet-bench
-- lease-profile`), for either class of agent.
--
-- An agent of class 'vm' pops the VM-only set first and the common set
-- only when it is empty, in one ZMPOP: VM tasks have no one else to serve
-- them, while every agent serves the common set. Priority holds within
-- each set. An agent of any other class (or an older one, without the
-- argument) never sees the VM-only set.
local function grant(agent, ttl, reap_limit, finished_ttl, vm, now)
  local gen = redis.call('GET', P .. 'gen')
  if not gen then
    -- Redis lost its data and the coordinator has not rebuilt it yet (L6):
    -- granting now could reissue an old epoch (L1).
    return {'not_ready'}
  end
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
      local requeued = reap(now, reap_limit, finished_ttl)
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
end
