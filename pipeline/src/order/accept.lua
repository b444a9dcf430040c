-- Records an order the broker has confirmed.
--
-- Guarantees, all in one atomic step:
--  * `order:<id>` gets `accepted_at` once and status `accepted` unless a later
--    stage (the processor may be faster than this call) moved it on;
--  * `counters.accepted` counts each order id once, however often it is
--    accepted (a retry, a second key, a processor that saw it first);
--  * the id is pushed on the capped `recent_orders` list once;
--  * the intake claim on the order is dropped, and the idempotency record turns
--    `done` (with the answer to replay) only for the claim's holder;
--  * the order record names its idempotency record (`idempotency_key`), so
--    retire.lua can let both expire together once the order is finished.
--
-- KEYS[1] order hash, KEYS[2] counters hash, KEYS[3] recent orders list,
-- KEYS[4] idempotency record (optional)
-- ARGV[1] claim token, ARGV[2] response status, ARGV[3] response body,
-- ARGV[4] key record TTL (ms), ARGV[5] order id, ARGV[6] recent list length
local now = now_ms()
if redis.call('HSETNX', KEYS[1], 'accepted_at', tostring(now)) == 1 then
  redis.call('HINCRBY', KEYS[2], 'accepted', 1)
  redis.call('LPUSH', KEYS[3], ARGV[5])
  redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[6]) - 1)
end
advance(KEYS[1], 'accepted')
if redis.call('HGET', KEYS[1], 'claim_token') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'claim_token', 'claim_until')
end
if KEYS[4] and redis.call('HGET', KEYS[4], 'token') == ARGV[1] then
  redis.call('HSET', KEYS[4], 'state', 'done', 'status', ARGV[2], 'body', ARGV[3])
  redis.call('HDEL', KEYS[4], 'token', 'lease_until')
  redis.call('PEXPIRE', KEYS[4], ARGV[4])
  redis.call('HSET', KEYS[1], 'idempotency_key', KEYS[4])
end
return 1
