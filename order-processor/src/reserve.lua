-- Decides an order exactly once: reserve its stock, or reject it.
--
-- Guarantees, all in one atomic step:
--  * an order already decided returns its recorded decision and changes
--    nothing (a redelivery never decrements twice, never counts twice);
--  * stock is decremented only when it covers the whole quantity, so
--    `inventory:<sku>` never goes below zero, under any concurrency;
--  * a missing `inventory:<sku>` rejects with `unknown_sku`, too little stock
--    with `out_of_stock`; either way stock is untouched;
--  * `order:<id>` records the outcome, reason and `<outcome>_at`, and its status
--    only moves forward (`accepted` -> `reserved`/`rejected`);
--  * `counters` counts each decision once: `reserved`, `rejected`,
--    `rejected_out_of_stock`, `rejected_unknown_sku`.
--
-- KEYS[1] order hash, KEYS[2] inventory key, KEYS[3] counters hash
-- ARGV[1] sku, ARGV[2] qty, ARGV[3] now (ms)
-- Returns {outcome, reason ('' if none), decided_at_ms, 1 if decided now | 0 if before}
local outcome = redis.call('HGET', KEYS[1], 'outcome')
if outcome then
  local recorded = redis.call('HMGET', KEYS[1], 'reason', outcome .. '_at')
  return {outcome, recorded[1] or '', recorded[2] or '0', 0}
end

local qty = tonumber(ARGV[2])
local reason = ''
local stock = redis.call('GET', KEYS[2])
if not stock then
  outcome, reason = 'rejected', 'unknown_sku'
else
  local units = tonumber(stock)
  if not units then
    return redis.error_reply(KEYS[2] .. ' does not hold an integer')
  end
  if units >= qty then
    redis.call('DECRBY', KEYS[2], qty)
    outcome = 'reserved'
  else
    outcome, reason = 'rejected', 'out_of_stock'
  end
end

redis.call('HSET', KEYS[1], 'outcome', outcome, outcome .. '_at', ARGV[3])
if reason ~= '' then
  redis.call('HSET', KEYS[1], 'reason', reason)
end
redis.call('HSETNX', KEYS[1], 'sku', ARGV[1])
redis.call('HSETNX', KEYS[1], 'qty', ARGV[2])
local status = redis.call('HGET', KEYS[1], 'status')
if not status or status == 'accepted' then
  redis.call('HSET', KEYS[1], 'status', outcome)
end
redis.call('HINCRBY', KEYS[3], outcome, 1)
if reason ~= '' then
  redis.call('HINCRBY', KEYS[3], 'rejected_' .. reason, 1)
end
return {outcome, reason, ARGV[3], 1}
