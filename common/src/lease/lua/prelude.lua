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
