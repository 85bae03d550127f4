-- wsfleet channel publish: append to history and publish live, atomically.
-- KEYS[1] seq, KEYS[2] epoch, KEYS[3] hist (stream), KEYS[4] live topic (same hash slot)
-- ARGV[1] data (valid JSON), ARGV[2] candidate epoch ([A-Za-z0-9]), ARGV[3] history max length,
-- ARGV[4] history max age in ms (0 = no age bound), ARGV[5] channel metadata TTL in ms,
-- ARGV[6] "1" to publish with SPUBLISH (Redis Cluster), "0" for PUBLISH.
-- Optional, for an idempotent publish: KEYS[5] the idempotency key's record (same hash slot),
-- ARGV[7] how long it is remembered, in ms.
-- Returns {offset, epoch, duplicate}: duplicate is 1 when KEYS[5] was already recorded, and
-- then nothing was published: the offset and epoch are the first publish's.
if KEYS[5] then
  local seen = redis.call('GET', KEYS[5])
  if seen then
    local sep = string.find(seen, ':', 1, true)
    return {tonumber(string.sub(seen, 1, sep - 1)), string.sub(seen, sep + 1), 1}
  end
end
local fresh = redis.call('EXISTS', KEYS[1]) == 0
local offset = redis.call('INCR', KEYS[1])
if fresh then
  -- A missing sequence means this channel's past (if any) is gone: start a new epoch and drop
  -- history entries that would collide with the restarted offsets. (A sequence at 0 was
  -- started by start.lua for a subscriber, whose ack already named its epoch: keep it.)
  redis.call('SET', KEYS[2], ARGV[2])
  redis.call('DEL', KEYS[3])
else
  redis.call('SET', KEYS[2], ARGV[2], 'NX')
end
local epoch = redis.call('GET', KEYS[2])

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local id = string.format('%d-0', offset)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], id, 'd', ARGV[1], 't', now)

local max_age = tonumber(ARGV[4])
if max_age > 0 then
  -- Trim on write: look at the oldest entries (usually one) and cut those past the age bound.
  local cutoff = now - max_age
  local oldest = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', 1)
  local expired = oldest[1] and tonumber(oldest[1][2][4]) < cutoff
  if expired then
    local batch = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', 100)
    local keep = nil
    for _, entry in ipairs(batch) do
      if tonumber(entry[2][4]) >= cutoff then
        keep = entry[1]
        break
      end
    end
    if keep == nil then
      local last = batch[#batch][1]
      keep = string.format('%d-0', tonumber(string.match(last, '^(%d+)')) + 1)
    end
    redis.call('XTRIM', KEYS[3], 'MINID', keep)
  end
  redis.call('PEXPIRE', KEYS[3], max_age)
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])

local envelope = '{"offset":' .. string.format('%d', offset) .. ',"epoch":' .. cjson.encode(epoch)
  .. ',"data":' .. ARGV[1] .. '}'
if ARGV[6] == '1' then
  redis.call('SPUBLISH', KEYS[4], envelope)
else
  redis.call('PUBLISH', KEYS[4], envelope)
end
if KEYS[5] then
  redis.call('SET', KEYS[5], string.format('%d', offset) .. ':' .. epoch, 'PX', ARGV[7])
end
return {offset, epoch, 0}
