-- An agent's completion and its request for the next task in one call
-- (issue 23): the completion is judged exactly as complete.lua judges it
-- (L3), then the agent is granted its next task exactly as lease.lua
-- grants it (L1, the `gen` gate included), by one Redis clock reading
-- (L2). The grant does not depend on the completion's verdict: a rejected
-- completion still leaves the agent free for other work.
-- ARGV: prefix, id, epoch, agent, event_json, finished_ttl, ttl_ms,
--   reap_limit, class
-- Returns the completion's reply followed by the grant's:
--   {'accepted' | 'duplicate' | 'rejected', reason or '', <grant reply...>}
local now = now_ms()
local c = complete_task(ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6]), now)
local g = grant(ARGV[4], tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[6]),
  ARGV[9] == 'vm', now)
local reply = {c[1], c[2] or ''}
for _, v in ipairs(g) do
  reply[#reply + 1] = v
end
return reply
