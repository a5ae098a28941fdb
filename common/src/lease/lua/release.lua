-- Graceful hand-back on shutdown: the task goes back to the queue without
-- counting a lease loss. ARGV: prefix, id, epoch, agent
-- Returns 'released' | 'not_held'
local id, epoch, agent = ARGV[2], ARGV[3], ARGV[4]
local k = task_key(id)
local f = redis.call('HMGET', k, 'state', 'epoch', 'agent', 'score', 'need')
if f[1] ~= 'leased' or f[2] ~= epoch or f[3] ~= agent then
  return 'not_held'
end
redis.call('HSET', k, 'state', 'queued')
redis.call('ZREM', LEASES, id)
redis.call('ZADD', ready_for(f[5]), f[4], id)
redis.call('HINCRBY', STATS, 'released', 1)
return 'released'
