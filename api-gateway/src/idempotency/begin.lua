-- Claims an idempotency key for one request, or says what to do instead.
--
-- Guarantee: at most one request holds a key at a time. The claim is a lease
-- (PEXPIRE) so a crashed gateway never wedges the key; a finished request's
-- response is replayed, never re-executed; a key reused for a different payload
-- is refused.
--
-- KEYS[1] idempotency record (hash)
-- ARGV[1] request fingerprint, ARGV[2] claim token, ARGV[3] lease (ms)
-- Returns {'process'} | {'mismatch'} | {'conflict', pttl_ms} | {'replay', status, body}
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  redis.call('HSET', KEYS[1], 'state', 'in_flight', 'fingerprint', ARGV[1], 'token', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {'process'}
end
if redis.call('HGET', KEYS[1], 'fingerprint') ~= ARGV[1] then
  return {'mismatch'}
end
if state == 'in_flight' then
  return {'conflict', tostring(redis.call('PTTL', KEYS[1]))}
end
local stored = redis.call('HMGET', KEYS[1], 'status', 'body')
return {'replay', stored[1], stored[2]}
