-- Gives a claimed idempotency key back after a failed publish, so the client's
-- retry is processed instead of being told "in flight" or replayed a failure.
--
-- Guarantee: only the claim's holder releases it (a request whose lease expired
-- and was re-claimed by another cannot delete the newer claim).
--
-- KEYS[1] idempotency record; ARGV[1] claim token
if redis.call('HGET', KEYS[1], 'token') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
