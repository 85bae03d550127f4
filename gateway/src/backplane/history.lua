-- wsfleet channel history read, consistent with concurrent publishes (scripts run atomically).
-- KEYS[1] seq, KEYS[2] epoch, KEYS[3] hist; ARGV[1] first wanted stream id ("<since+1>-0").
-- Returns {epoch or "", last offset, entries}, entries = {{id, {"d", data, "t", ms}}, ...}.
local epoch = redis.call('GET', KEYS[2]) or ''
local seq = tonumber(redis.call('GET', KEYS[1]) or '0')
local entries = redis.call('XRANGE', KEYS[3], ARGV[1], '+')
return {epoch, seq, entries}
