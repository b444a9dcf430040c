-- Claims an order for one intake request: its idempotency key (when the request
-- has an `Idempotency-Key` header) and its order id, or says what to do instead.
--
-- Guarantees, all in one atomic step:
--  * an id is bound to one payload (sku, qty) forever: the first claim writes
--    them to `order:<id>`, and a request naming the id with another payload is
--    refused ('id_conflict'), whatever its key, before anything is written;
--  * a header key remembers the order id it was first used with (minted once,
--    for a request without a body id) for the key's whole lifetime, so every
--    retry — after a 503, an expired lease, a lost reply — publishes that same
--    id, never a new order;
--  * at most one request holds a key, and one an unconfirmed id, at a time;
--    each claim is a lease, so a crashed gateway never wedges either;
--  * a finished key replays its stored answer; an id already accepted (under
--    any key, or none) is the same order and replays the acceptance;
--  * a retried call with the same token finds its own claim and proceeds;
--  * an id with no record whose bits are all set in the filter of retired ids
--    (its order finished and its records expired) is not claimed: 'retired'
--    tells the caller to ask the history first. ARGV[10]: '1' checks any id
--    (a client's), 'key' only an id remembered by the key's record (a minted
--    id is new, but one minted earlier may have retired), '0' none (the
--    history already said it never saw the id).
--
-- Header keys (`idemp:<key>`) and order ids (`order:<id>`) are separate key
-- spaces. When the key's record names an id, the order hash is derived from
-- ARGV[7] (single Redis instance; not for Redis Cluster).
--
-- KEYS[1] order hash of the candidate id, KEYS[2] idempotency record (optional)
-- ARGV[1] candidate id (the body id, or a freshly minted one), ARGV[2] sku,
-- ARGV[3] qty, ARGV[4] request fingerprint, ARGV[5] claim token,
-- ARGV[6] lease (ms), ARGV[7] order key prefix, ARGV[8] key record TTL (ms),
-- ARGV[9] retired-ids filter key, ARGV[10] check it ('1' | '0'),
-- ARGV[11] filter size (bits), ARGV[12] quote key ('' = none),
-- ARGV[13] quote id ('' = none), ARGV[14] the order's client
--
-- A quote-backed order (ARGV[13]): the quote id is part of the order's
-- payload (same id + sku + qty + quote = same order). A new order's quote
-- must exist, be the same client's (another client's quote is unknown to
-- this one), be unexpired, be for this sku and qty, and back no other order
-- id ('invalid_quote' otherwise); the order record then keeps the quote's
-- terms (supplier, price), and the quote remembers its order. A retry of the
-- same order needs no valid quote any more: its record has the terms.
--
-- Returns {'process', id [, quote_id, supplier, unit_price_minor,
--          total_minor, currency, delivery_days]}
--       | {'replay', status, body} | {'accepted', id}
--       | {'conflict', ms} | {'mismatch'} | {'id_conflict', id} | {'retired', id}
--       | {'invalid_quote', reason}
local now = now_ms()
local id, order = ARGV[1], KEYS[1]
local key = KEYS[2]
local token, lease = ARGV[5], tonumber(ARGV[6])

if key then
  local rec = redis.call('HMGET', key, 'fingerprint', 'state', 'token', 'lease_until', 'id', 'status', 'body')
  if rec[1] then
    if rec[1] ~= ARGV[4] then
      return {'mismatch'}
    end
    if rec[2] == 'done' then
      return {'replay', rec[6], rec[7]}
    end
    if rec[3] and rec[3] ~= token and tonumber(rec[4] or '0') > now then
      return {'conflict', tostring(tonumber(rec[4]) - now)}
    end
    id = rec[5]
    order = ARGV[7] .. id
  end
end

local o = redis.call('HMGET', order, 'sku', 'qty', 'status', 'claim_token', 'claim_until', 'quote_id')
if o[1] and (o[1] ~= ARGV[2] or o[2] ~= ARGV[3] or (o[6] or '') ~= ARGV[13]) then
  return {'id_conflict', id}
end
if o[3] then
  -- Accepted before (under another key, or none): the same order.
  if key then
    redis.call('HSET', key, 'fingerprint', ARGV[4], 'id', id, 'state', 'linked')
    redis.call('HDEL', key, 'token', 'lease_until')
    redis.call('PEXPIRE', key, ARGV[8])
  end
  return {'accepted', id}
end
if o[4] and o[4] ~= token and tonumber(o[5] or '0') > now then
  return {'conflict', tostring(tonumber(o[5]) - now)}
end
if not o[1] and (ARGV[10] == '1' or (ARGV[10] == 'key' and id ~= ARGV[1])) then
  local maybe = true
  for _, bit in ipairs(retired_bits(id, tonumber(ARGV[11]))) do
    if redis.call('GETBIT', ARGV[9], bit) == 0 then
      maybe = false
      break
    end
  end
  if maybe then
    return {'retired', id}
  end
end

if ARGV[13] ~= '' and not o[1] then
  local q = redis.call('HMGET', ARGV[12], 'sku', 'qty', 'valid_until_ms', 'order_id', 'supplier',
    'unit_price_minor', 'total_minor', 'currency', 'delivery_days', 'client')
  if not q[1] or (q[10] or 'default') ~= ARGV[14] then
    return {'invalid_quote', 'quote ' .. ARGV[13] .. ' is unknown or expired; ask for a new one with GET /quotes/{sku}'}
  end
  if not (q[2] and tonumber(q[3]) and q[5] and tonumber(q[6]) and tonumber(q[7]) and q[8]
      and tonumber(q[9])) then
    return {'invalid_quote', 'quote ' .. ARGV[13] .. ' is damaged (its record lacks a term); ask for a new one'}
  end
  if tonumber(q[3]) <= now then
    return {'invalid_quote', 'quote ' .. ARGV[13] .. ' expired ' .. tostring(now - tonumber(q[3])) ..
      ' ms ago (valid_until_ms ' .. q[3] .. '); ask for a new one with GET /quotes/{sku}'}
  end
  if q[1] ~= ARGV[2] or q[2] ~= ARGV[3] then
    return {'invalid_quote', 'quote ' .. ARGV[13] .. ' is for ' .. q[2] .. ' x ' .. q[1] ..
      ', not ' .. ARGV[3] .. ' x ' .. ARGV[2]}
  end
  if q[4] and q[4] ~= id then
    return {'invalid_quote', 'quote ' .. ARGV[13] .. ' already backs order ' .. string.match(q[4], '[^/]*$') .. '; a quote backs one order'}
  end
  redis.call('HSET', ARGV[12], 'order_id', id)
  redis.call('HSET', order, 'quote_id', ARGV[13], 'supplier', q[5], 'unit_price_minor', q[6],
    'total_minor', q[7], 'currency', q[8], 'delivery_days', q[9])
end

redis.call('HSET', order, 'sku', ARGV[2], 'qty', ARGV[3], 'claim_token', token,
  'claim_until', tostring(now + lease))
if key then
  redis.call('HSET', key, 'fingerprint', ARGV[4], 'id', id, 'state', 'in_flight',
    'token', token, 'lease_until', tostring(now + lease))
  redis.call('PEXPIRE', key, ARGV[8])
end
if ARGV[13] ~= '' then
  local t = redis.call('HMGET', order, 'quote_id', 'supplier', 'unit_price_minor', 'total_minor',
    'currency', 'delivery_days')
  return {'process', id, t[1] or '', t[2] or '', t[3] or '', t[4] or '', t[5] or '', t[6] or ''}
end
return {'process', id}
