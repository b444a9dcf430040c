-- Records the end of one send attempt (after the send, never before).
--
-- Guarantees, in one atomic step:
--  * 'sent': the notification hash says sent (with sent_at and the channel),
--    `order:<id>` moves to `notified` (only forward, from reserved/accepted),
--    and `counters.notified` counts it once, however often it is recorded;
--  * 'failed': the error is kept in last_error and the claim is given back so
--    the next delivery may try at once; a hash already sent is left alone;
--  * attempts counts every send attempt made;
--  * the counters' notifications_sending / notifications_failed tallies follow
--    the status change.
--
-- KEYS[1] notification hash, KEYS[2] order hash, KEYS[3] counters hash
-- ARGV[1] 'sent' | 'failed', ARGV[2] claim token, ARGV[3] attempts made,
-- ARGV[4] sink, ARGV[5] last error ('' if none)
-- Returns 1 if this call recorded the send, 0 otherwise.
local t = redis.call('TIME')
local now = tostring(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
redis.call('HINCRBY', KEYS[1], 'attempts', tonumber(ARGV[3]))
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[1], 'last_error', ARGV[5])
end
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'sent' then
  return 0
end
if ARGV[1] == 'failed' then
  if redis.call('HGET', KEYS[1], 'claim_token') == ARGV[2] then
    redis.call('HINCRBY', KEYS[3], 'notifications_sending', -1)
    redis.call('HINCRBY', KEYS[3], 'notifications_failed', 1)
    redis.call('HSET', KEYS[1], 'status', 'failed')
    redis.call('HDEL', KEYS[1], 'claim_token', 'claim_until')
  end
  return 0
end
if status == 'sending' then
  redis.call('HINCRBY', KEYS[3], 'notifications_sending', -1)
elseif status == 'failed' then
  redis.call('HINCRBY', KEYS[3], 'notifications_failed', -1)
end
redis.call('HSET', KEYS[1], 'status', 'sent', 'sent_at', now, 'channel', ARGV[4])
redis.call('HDEL', KEYS[1], 'claim_token', 'claim_until')
local order_status = redis.call('HGET', KEYS[2], 'status')
if not order_status or order_status == 'accepted' or order_status == 'reserved' then
  redis.call('HSET', KEYS[2], 'status', 'notified')
end
redis.call('HSETNX', KEYS[2], 'notified_at', now)
redis.call('HINCRBY', KEYS[3], 'notified', 1)
return 1
