-- wsfleet registry: delete a client's entry only if it still points at this node run (the
-- client may already have reconnected to another node).
-- KEYS[1] client key; ARGV[1] the entry this node run writes. Returns 1 when deleted.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
