-- Hands out a gathered answer's quotes to one client, within its budget:
-- at most ARGV[1] unexpired quotes per client (QUOTE_MAX_OUTSTANDING). All
-- of the answer's quotes or none: past the budget nothing is written.
--
-- KEYS[1] the client's quotes (`quotes_out@<client>`, quote id by
-- valid_until_ms), KEYS[2..] one `quote:<id>` per quote.
-- ARGV[1] budget, ARGV[2] valid_until_ms, ARGV[3] keep the hashes until
-- (ms), ARGV[4] client, ARGV[5] sku, ARGV[6] qty, then six per quote:
-- id, supplier, unit_price_minor, total_minor, currency, delivery_days.
--
-- Returns {1, held} | {0, held, ms until the oldest expires}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local held = redis.call('ZCARD', KEYS[1])
local n = #KEYS - 1
if held + n > tonumber(ARGV[1]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  local wait = 1000
  if oldest[2] then
    wait = math.max(tonumber(oldest[2]) - now, 1)
  end
  return {0, held, wait}
end
for i = 1, n do
  local a = 6 + (i - 1) * 6
  redis.call('HSET', KEYS[i + 1], 'client', ARGV[4], 'sku', ARGV[5], 'qty', ARGV[6],
    'supplier', ARGV[a + 2], 'unit_price_minor', ARGV[a + 3], 'total_minor', ARGV[a + 4],
    'currency', ARGV[a + 5], 'delivery_days', ARGV[a + 6], 'valid_until_ms', ARGV[2])
  redis.call('PEXPIREAT', KEYS[i + 1], ARGV[3])
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[a + 1])
end
if n > 0 then
  redis.call('PEXPIREAT', KEYS[1], ARGV[2])
end
return {1, held + n}
