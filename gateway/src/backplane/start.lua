-- wsfleet channel position for a subscribe ack: the last offset and the epoch, starting an
-- epoch at offset 0 when the channel has no sequence yet, so that the ack names the epoch the
-- channel's first message will carry (publish.lua keeps an epoch whose sequence exists).
-- KEYS[1] seq, KEYS[2] epoch, KEYS[3] hist (same hash slot)
-- ARGV[1] candidate epoch ([A-Za-z0-9]), ARGV[2] channel metadata TTL in ms.
-- Returns {offset, epoch}.
local seq = redis.call('GET', KEYS[1])
if not seq then
  -- No sequence: the channel is new, or its past is gone. Either way a new epoch starts.
  redis.call('SET', KEYS[1], '0', 'PX', ARGV[2])
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
  redis.call('DEL', KEYS[3])
  return {0, ARGV[1]}
end
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
  epoch = ARGV[1]
end
return {tonumber(seq), epoch}
