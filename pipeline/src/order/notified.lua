-- Records the end of one notification attempt (after the send, never before).
--
-- Guarantees, in one atomic step:
--  * 'sent': the notification hash says sent (with sent_at and the channel),
--    `order:<id>` moves forward to `notified`, and `counters.notified` counts
--    it once, however often it is recorded; `sends` on the notification hash
--    counts every send that reached the sink (more than 1 only if a notifier
--    died between a send and its record: the load ledger reports it);
--  * 'failed': the error is kept in last_error and the claim is given back so
--    the next delivery may try at once; a hash already sent is left alone;
--  * attempts counts every send attempt made;
--  * the counters' notifications_sending / notifications_failed tallies follow
--    the status change.
--
-- KEYS[1] notification hash, KEYS[2] order hash, KEYS[3] counters hash
-- ARGV[1] 'sent' | 'failed', ARGV[2] claim token, ARGV[3] attempts made,
-- ARGV[4] sink, ARGV[5] last error ('' if none)
-- Returns {1 if this call recorded the send else 0, sent_at ('' unless sent)}.
local now = tostring(now_ms())
redis.call('HINCRBY', KEYS[1], 'attempts', tonumber(ARGV[3]))
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[1], 'last_error', ARGV[5])
end
local status = redis.call('HGET', KEYS[1], 'status')
-- A retried call (its reply was lost) carries the same token: counted once.
if ARGV[1] == 'sent' and redis.call('HGET', KEYS[1], 'sent_token') ~= ARGV[2] then
  redis.call('HINCRBY', KEYS[1], 'sends', 1)
  redis.call('HSET', KEYS[1], 'sent_token', ARGV[2])
end
if status == 'sent' then
  return {0, redis.call('HGET', KEYS[1], 'sent_at') or ''}
end
if ARGV[1] == 'failed' then
  if redis.call('HGET', KEYS[1], 'claim_token') == ARGV[2] then
    redis.call('HINCRBY', KEYS[3], 'notifications_sending', -1)
    redis.call('HINCRBY', KEYS[3], 'notifications_failed', 1)
    redis.call('HSET', KEYS[1], 'status', 'failed')
    redis.call('HDEL', KEYS[1], 'claim_token', 'claim_until')
  end
  return {0, ''}
end
if status == 'sending' then
  redis.call('HINCRBY', KEYS[3], 'notifications_sending', -1)
elseif status == 'failed' then
  redis.call('HINCRBY', KEYS[3], 'notifications_failed', -1)
end
redis.call('HSET', KEYS[1], 'status', 'sent', 'sent_at', now, 'channel', ARGV[4])
redis.call('HDEL', KEYS[1], 'claim_token', 'claim_until')
if redis.call('HGET', KEYS[2], 'status') ~= 'rejected' then
  advance(KEYS[2], 'notified')
end
redis.call('HSETNX', KEYS[2], 'notified_at', now)
redis.call('HINCRBY', KEYS[3], 'notified', 1)
return {1, now}
