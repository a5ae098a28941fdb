-- Grants the best ready task to an agent (see `grant` in prelude.lua).
-- ARGV: prefix, agent, ttl_ms, reap_limit, finished_ttl, class
-- Returns {'granted', id, epoch, deadline_ms, payload} | {'empty'} | {'not_ready'}
return grant(ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]),
  ARGV[6] == 'vm', now_ms())
