-- Completes a lease with its outcome event (see `complete_task` in
-- prelude.lua). ARGV: prefix, id, epoch, agent, event_json, finished_ttl
-- Returns {'accepted'} | {'duplicate'} | {'rejected', reason}
return complete_task(ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6]), now_ms())
