-- Gives an intake claim back after a publish that was not confirmed, so the
-- client's retry is processed at once instead of waiting out the lease.
--
-- Guarantees: only the claim's holder releases it (a request whose lease
-- expired and was taken over cannot free the newer claim); the order id stays
-- bound to its payload and the key to its id, because the broker may still
-- hold the message (a confirm timeout is an unknown outcome, not a failure):
-- the retry republishes the same order id, which the processor decides once.
--
-- KEYS[1] order hash, KEYS[2] idempotency record (optional)
-- ARGV[1] claim token
if redis.call('HGET', KEYS[1], 'claim_token') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'claim_token', 'claim_until')
end
if KEYS[2] and redis.call('HGET', KEYS[2], 'token') == ARGV[1] then
  redis.call('HDEL', KEYS[2], 'token', 'lease_until')
end
return 1
