-- Claims the right to send one notification, or says why not.
--
-- Guarantees: a notification recorded as sent is never claimed again; while one
-- holder's claim is live nobody else may send; a claim expires (its holder
-- crashed) so the notification is sent again rather than lost; a retried call
-- with the same token (its first reply was lost) finds its own claim.
--
-- An order with neither a notification nor an order record is not claimed
-- ('unrecorded') unless ARGV[5] is '1': both records may have expired after
-- the order was finished and kept in the history, which only the caller can
-- ask.
--
-- KEYS[1] notification hash, KEYS[2] counters hash (notifications_sending and
-- notifications_failed tally hashes by status), KEYS[3] order hash
-- ARGV[1] claim token, ARGV[2] claim lifetime (ms), ARGV[3] event id, ARGV[4] sink,
-- ARGV[5] adopt an unrecorded order ('1' | '0')
-- Returns {'sent', sent_at, channel} | {'busy', ms until the claim expires}
--       | {'claimed'} | {'unrecorded'}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'status', 'claim_token', 'claim_until')
if state[1] == 'sent' then
  local sent = redis.call('HMGET', KEYS[1], 'sent_at', 'channel')
  return {'sent', sent[1] or '0', sent[2] or ''}
end
if not state[1] and ARGV[5] ~= '1' and redis.call('EXISTS', KEYS[3]) == 0 then
  return {'unrecorded'}
end
if state[2] == ARGV[1] then
  -- Our own claim: a retried call whose first reply was lost.
  redis.call('HSET', KEYS[1], 'claim_until', tostring(now + tonumber(ARGV[2])))
  return {'claimed'}
end
if state[2] and tonumber(state[3] or '0') > now then
  return {'busy', tostring(tonumber(state[3]) - now)}
end
-- Keep the per-status tallies the dashboard shows exact.
if state[1] == 'failed' then
  redis.call('HINCRBY', KEYS[2], 'notifications_failed', -1)
end
if state[1] ~= 'sending' then
  redis.call('HINCRBY', KEYS[2], 'notifications_sending', 1)
end
redis.call('HSET', KEYS[1], 'status', 'sending', 'claim_token', ARGV[1],
  'claim_until', tostring(now + tonumber(ARGV[2])), 'event_id', ARGV[3], 'channel', ARGV[4])
return {'claimed'}
