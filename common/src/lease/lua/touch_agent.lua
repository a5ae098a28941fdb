-- Marks an agent alive by Redis time. ARGV: prefix, agent
redis.call('ZADD', P .. 'agents', now_ms(), ARGV[2])
return 1
