-- Extends a live lease. ARGV: prefix, id, epoch, agent, ttl_ms
-- Returns {'renewed', deadline_ms} | {'refused', reason}
local id, epoch, agent, ttl = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local k = task_key(id)
local now = now_ms()
local f = redis.call('HMGET', k, 'state', 'epoch', 'agent', 'deadline')
if not f[1] then return {'refused', 'unknown_task'} end
if f[1] ~= 'leased' then return {'refused', 'not_leased'} end
if f[2] ~= epoch then return {'refused', 'stale_epoch'} end
if f[3] ~= agent then return {'refused', 'wrong_agent'} end
if tonumber(f[4]) <= now then return {'refused', 'expired'} end
local deadline = now + ttl
redis.call('HSET', k, 'deadline', fmt_int(deadline))
redis.call('ZADD', LEASES, deadline, id)
return {'renewed', fmt_int(deadline)}
