-- Lets the Redis records of finished orders expire, once the history holds
-- them (the history calls this after the commit that recorded them final).
--
-- Guarantees: only an order whose record says it is final (`rejected`,
-- `notified`) is touched; its `order:<id>` and `notification:<id>` expire
-- after the retention, and its idempotency record (named in the order record
-- by accept.lua) expires no later than that (never later than its own TTL).
-- Calling it again for the same order changes nothing that matters. The id
-- is added to the filter of retired ids, so that once the records are gone a
-- new request reusing the id is checked against the history (intake.lua)
-- instead of being taken for a new order.
--
-- KEYS[1] the retired-ids filter, then for each order its order hash and its
-- notification hash
-- ARGV[1] retention (seconds), ARGV[2] filter size (bits), then each order's id
-- Returns how many orders were set to expire.
local retired = 0
local bits = tonumber(ARGV[2])
for i = 2, #KEYS, 2 do
  local status = redis.call('HGET', KEYS[i], 'status')
  if status == 'rejected' or status == 'notified' then
    for _, bit in ipairs(retired_bits(ARGV[i / 2 + 2], bits)) do
      redis.call('SETBIT', KEYS[1], bit, 1)
    end
    local idempotency = redis.call('HGET', KEYS[i], 'idempotency_key')
    redis.call('EXPIRE', KEYS[i], ARGV[1])
    redis.call('EXPIRE', KEYS[i + 1], ARGV[1])
    if idempotency then
      redis.call('EXPIRE', idempotency, ARGV[1], 'LT')
    end
    retired = retired + 1
  end
end
return retired
