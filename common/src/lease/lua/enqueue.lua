-- Adds tasks that Redis does not know yet; idempotent, so the planner and
-- reconciliation (DESIGN L6) share it.
-- ARGV: prefix, finished_ttl, then per task 9 values:
--   id, run, rule, score, budget, groups (tab-separated), hold ("" or
--   "group\tthreshold"), payload, need ('container' or 'vm': which ready
--   set the task waits in, now and whenever it is requeued).
-- Callers enqueue group members before the tasks held on that group.
local created = 0
local i = 3
while i <= #ARGV do
  local id, run, rule, score = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local budget, groups, hold, payload = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6], ARGV[i + 7]
  local need = ARGV[i + 8]
  i = i + 9
  local k = task_key(id)
  if redis.call('EXISTS', k) == 0 then
    created = created + 1
    redis.call('HSET', k, 'run', run, 'rule', rule, 'score', score, 'budget', budget,
      'groups', groups, 'payload', payload, 'grants', 0, 'losses', 0, 'epoch', 0, 'agent', '',
      'need', need)
    for g in string.gmatch(groups, '[^\t]+') do
      redis.call('INCR', P .. 'grp:' .. g)
    end
    local state = 'queued'
    if hold ~= '' then
      local group, threshold = string.match(hold, '^(.*)\t(%d+)$')
      local pending = tonumber(redis.call('GET', P .. 'grp:' .. group) or '0')
      if pending > tonumber(threshold) then
        state = 'held'
        redis.call('ZADD', P .. 'held:' .. group, threshold, id)
      end
    end
    redis.call('HSET', k, 'state', state)
    if state == 'queued' then
      redis.call('ZADD', ready_for(need), score, id)
    end
  end
end
return created
