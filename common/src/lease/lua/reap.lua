-- Coordinator side reclaim of expired leases (DESIGN L5).
-- ARGV: prefix, limit, finished_ttl. Returns {requeued, dead}.
local requeued, dead = reap(now_ms(), tonumber(ARGV[2]), tonumber(ARGV[3]))
return {requeued, dead}
