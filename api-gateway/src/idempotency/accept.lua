-- Records an order the broker has confirmed: the order record, the counter and,
-- when the request had an idempotency key, its stored response.
--
-- Guarantees, all in one atomic step:
--  * `order:<id>` gets sku, qty and accepted_at, and status `accepted` only if no
--    later stage (the processor may be faster than this call) has set a status;
--  * `counters.accepted` counts each order id once, however often it is accepted
--    (replays, or a retry after a confirm timeout under a new key);
--  * the idempotency record turns `done` only for the claim's holder, and then
--    lives for the done TTL.
--
--  * the order id is pushed on the capped `recent_orders` list once.
--
-- KEYS[1] order hash, KEYS[2] counters hash, KEYS[3] recent orders list,
-- KEYS[4] idempotency record (optional)
-- ARGV[1] sku, ARGV[2] qty, ARGV[3] accepted_at (ms), ARGV[4] claim token,
-- ARGV[5] response status, ARGV[6] response body, ARGV[7] done TTL (ms), ARGV[8] order id
if redis.call('HSETNX', KEYS[1], 'accepted_at', ARGV[3]) == 1 then
  redis.call('HINCRBY', KEYS[2], 'accepted', 1)
  redis.call('LPUSH', KEYS[3], ARGV[8])
  redis.call('LTRIM', KEYS[3], 0, 99)
end
redis.call('HSETNX', KEYS[1], 'status', 'accepted')
redis.call('HSETNX', KEYS[1], 'sku', ARGV[1])
redis.call('HSETNX', KEYS[1], 'qty', ARGV[2])
if KEYS[4] and redis.call('HGET', KEYS[4], 'token') == ARGV[4] then
  redis.call('HSET', KEYS[4], 'state', 'done', 'status', ARGV[5], 'body', ARGV[6])
  redis.call('HDEL', KEYS[4], 'token')
  redis.call('PEXPIRE', KEYS[4], ARGV[7])
end
return 1
