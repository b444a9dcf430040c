-- One request of one key on one route against its rate (GCRA): shared by
-- every gateway, so N gateways never allow N times the rate.
--
-- KEYS[1] `rate:<key id>:<route>`: the theoretical arrival time (µs).
-- ARGV[1] emission interval (µs, 1e6 / rate), ARGV[2] burst (requests that
-- may arrive at once).
--
-- Returns {allowed (1 | 0), remaining, µs until the burst is whole again,
--          µs until a refused request may be retried (0 when allowed)}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = interval * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then
  tat = now
end
local next_tat = tat + interval
local allow_at = next_tat - tolerance
if allow_at > now then
  return {0, 0, math.floor(tat - now), math.floor(allow_at - now)}
end
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX',
  math.floor((next_tat - now) / 1000) + 1)
return {1, math.floor((now + tolerance - next_tat) / interval), math.floor(next_tat - now), 0}
