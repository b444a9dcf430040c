-- Shared prelude of every script that touches `order:<id>` (prepended by
-- pipeline::order): the order statuses and their forward-only ranks. Mirrors
-- `OrderStatus::rank` in Rust (a unit test keeps the two equal).
local RANK = {accepted = 1, parked = 2, reserved = 3, rejected = 3, notified = 4}

-- Moves `order`'s status to `to` only if that is a step forward (or the order
-- had no status yet). Returns true when it moved.
local function advance(order, to)
  local from = redis.call('HGET', order, 'status')
  if from and (RANK[from] or 0) >= RANK[to] then
    return false
  end
  redis.call('HSET', order, 'status', to)
  return true
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The bits of `id` in the filter of retired order ids (`bits` long): four
-- positions from its SHA-1. All four set = "maybe retired"; any clear =
-- certainly never retired.
local function retired_bits(id, bits)
  local h = redis.sha1hex(id)
  local out = {}
  for i = 0, 3 do
    out[#out + 1] = tonumber(string.sub(h, i * 8 + 1, i * 8 + 8), 16) % bits
  end
  return out
end
