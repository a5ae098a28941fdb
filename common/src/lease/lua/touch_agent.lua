-- Marks an agent alive by Redis time (DESIGN L2). ARGV: prefix, agent,
-- class. An agent whose targets are VMs is also in `agents:vm`, which the
-- planner reads to know whether a rule that needs a VM can be served; an
-- agent that comes back on containers leaves it.
local now = now_ms()
redis.call('ZADD', P .. 'agents', now, ARGV[2])
if ARGV[3] == 'vm' then
  redis.call('ZADD', P .. 'agents:vm', now, ARGV[2])
else
  redis.call('ZREM', P .. 'agents:vm', ARGV[2])
end
return 1
