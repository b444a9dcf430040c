-- Decides an order exactly once, from its record: reserve its stock, reject
-- it, or park it.
--
-- Guarantees, all in one atomic step:
--  * the decision is taken from `order:<id>`'s sku and qty; a message that
--    names other values is an anomaly: nothing changes but the anomaly count
--    and list ('mismatch'), and the message is parked by the caller;
--  * an order with no record is not decided ('unrecorded'): its record may
--    have expired once the order was finished and kept in the history, and
--    only the caller can ask the history; called again with adopt = '1' (the
--    history has never seen it: it was published around the gateway), the
--    order adopts the message's sku and qty as its record;
--  * an order already decided returns its recorded decision and changes
--    nothing (a redelivery never decrements twice, never counts twice);
--  * stock is decremented only when it covers the whole quantity, so
--    `inventory:<sku>` never goes below zero, under any concurrency;
--  * a missing `inventory:<sku>` rejects with `unknown_sku`, too little stock
--    with `out_of_stock`; a value that is not an integer Redis can count with
--    (canonical, within 64 bits: up to 9223372036854775807) parks the order
--    (status `parked`, reason `invalid_stock`) without deciding it, so once
--    the operator fixes the value a replay decides it;
--  * the status only moves forward; `counters` counts each decision once
--    (`reserved`, `rejected`, `rejected_<reason>`), `parked` is the number
--    of orders parked right now, and `decisions` on the record counts fresh
--    decisions (always 1: the load ledger checks it).
--
-- KEYS[1] order hash, KEYS[2] inventory key, KEYS[3] counters hash,
-- KEYS[4] recent orders list, KEYS[5] anomalies list
-- ARGV[1] sku, ARGV[2] qty, ARGV[3] message id, ARGV[4] recent list length,
-- ARGV[5] order id, ARGV[6] adopt ('1' | '0'), ARGV[7] the message's quote id
-- ('' = none), ARGV[8..12] its supplier, unit_price_minor, total_minor,
-- currency, delivery_days (a quote-backed order: part of what must match the
-- record, and adopted with it)
-- Returns {outcome, reason, decided_at_ms, fresh (1|0), sku, qty}
--   outcome: 'reserved' | 'rejected' | 'parked' | 'mismatch' | 'unrecorded'
local now = now_ms()
local rec = redis.call('HMGET', KEYS[1], 'sku', 'qty', 'outcome', 'reason', 'accepted_at', 'status', 'quote_id')
local sku, qty = rec[1], rec[2]
if sku and (sku ~= ARGV[1] or qty ~= ARGV[2] or (rec[7] or '') ~= ARGV[7]) then
  redis.call('HINCRBY', KEYS[3], 'anomalies', 1)
  redis.call('LPUSH', KEYS[5], cjson.encode({
    at_ms = now, message_id = ARGV[3], kind = 'mismatch',
    message = {sku = ARGV[1], qty = tonumber(ARGV[2]), quote_id = ARGV[7]},
    record = {sku = sku, qty = tonumber(qty), quote_id = rec[7] or ''},
  }))
  redis.call('LTRIM', KEYS[5], 0, 99)
  return {'mismatch', 'record_mismatch', tostring(now), 1, sku, qty}
end
if rec[3] then
  local at = redis.call('HGET', KEYS[1], rec[3] .. '_at')
  return {rec[3], rec[4] or '', at or '0', 0, sku, qty}
end
if not sku then
  if ARGV[6] ~= '1' then
    return {'unrecorded', '', tostring(now), 0, ARGV[1], ARGV[2]}
  end
  sku, qty = ARGV[1], ARGV[2]
  redis.call('HSET', KEYS[1], 'sku', sku, 'qty', qty)
  if ARGV[7] ~= '' then
    redis.call('HSET', KEYS[1], 'quote_id', ARGV[7], 'supplier', ARGV[8], 'unit_price_minor', ARGV[9],
      'total_minor', ARGV[10], 'currency', ARGV[11], 'delivery_days', ARGV[12])
  end
end
if not rec[5] then
  -- The broker had it but the gateway never recorded it (a crash or a confirm
  -- timeout between the two): it is accepted all the same.
  redis.call('HSET', KEYS[1], 'accepted_at', tostring(now))
  redis.call('HINCRBY', KEYS[3], 'accepted', 1)
  redis.call('LPUSH', KEYS[4], ARGV[5])
  redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[4]) - 1)
  advance(KEYS[1], 'accepted')
end

-- Whether `stock` covers `units`, or nil when it is not an integer Redis
-- would count with (canonical digits within 64 bits, what DECRBY accepts).
-- Lua numbers are doubles, exact only to 2^53, so a long value is judged by
-- its digits: a quantity is far below 10^15.
local function covers(stock, units)
  local sign, digits = string.match(stock, '^(%-?)(%d+)$')
  if not digits or (#digits > 1 and string.sub(digits, 1, 1) == '0')
      or (sign == '-' and digits == '0') then
    return nil
  end
  local max = sign == '-' and '9223372036854775808' or '9223372036854775807'
  if #digits > 19 or (#digits == 19 and digits > max) then
    return nil
  end
  if sign == '-' then
    return false
  end
  return #digits > 15 or tonumber(digits) >= units
end

local units = tonumber(qty)
local stock = redis.call('GET', KEYS[2])
local enough = stock and covers(stock, units)
local outcome, reason = nil, ''
if not stock then
  outcome, reason = 'rejected', 'unknown_sku'
elseif enough == nil then
  if rec[6] ~= 'parked' then
    redis.call('HINCRBY', KEYS[3], 'parked', 1)
  end
  advance(KEYS[1], 'parked')
  redis.call('HSET', KEYS[1], 'reason', 'invalid_stock', 'parked_at', tostring(now))
  return {'parked', 'invalid_stock', tostring(now), 1, sku, qty}
elseif enough then
  redis.call('DECRBY', KEYS[2], units)
  outcome = 'reserved'
else
  outcome, reason = 'rejected', 'out_of_stock'
end

if rec[6] == 'parked' then
  redis.call('HINCRBY', KEYS[3], 'parked', -1)
end
redis.call('HSET', KEYS[1], 'outcome', outcome, outcome .. '_at', tostring(now))
if reason ~= '' then
  redis.call('HSET', KEYS[1], 'reason', reason)
else
  redis.call('HDEL', KEYS[1], 'reason')
end
redis.call('HINCRBY', KEYS[1], 'decisions', 1)
advance(KEYS[1], outcome)
redis.call('HINCRBY', KEYS[3], outcome, 1)
if reason ~= '' then
  redis.call('HINCRBY', KEYS[3], 'rejected_' .. reason, 1)
end
return {outcome, reason, tostring(now), 1, sku, qty}
