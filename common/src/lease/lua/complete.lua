-- Accepts a completion iff it carries the task's current epoch and the lease
-- is still live by Redis time (DESIGN L3); acceptance and appending the
-- outcome event are one step. A refused completion is counted and its event
-- recorded with a `rejected` field, never applied.
-- ARGV: prefix, id, epoch, agent, event_json, finished_ttl
-- Returns {'accepted'} | {'duplicate'} | {'rejected', reason}
local id, epoch, agent, ev, finished_ttl = ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
local k = task_key(id)
local now = now_ms()
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
