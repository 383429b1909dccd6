-- weir shared rate limits, layout v1 (see policy/limit/shared/mod.rs).
--
-- A change to the keys, the arguments or the reply must bump the version in the keys
-- (`:v1:`) and in this first line (which changes the script's SHA), so that old and new
-- gateway instances can run side by side during a rolling deploy.
--
-- One limiter's state, under one Redis Cluster hash tag:
--   KEYS[1] log   sorted set: reservation id -> admission time (µs of Redis's TIME)
--   KEYS[2] amt   hash: id -> "requests:input:output"; "ur"/"ui"/"uo" the sums
--   KEYS[3] tat   string: the per-second bucket's theoretical arrival time (µs), GCRA
--
-- ARGV[1] is the operation:
--   reserve window_us lim_r lim_i lim_o d_r d_i d_o interval_us burst max_wait_us id
--     (a limit of 0 is "none"; interval_us 0 is "no bucket"; max_wait_us < 0 is "never wait";
--     id is the caller's: random, so a caller whose reply timed out can still refund it)
--     -> {1, now_us, wait_us, used_r, used_i, used_o, reset_us}   admitted, at now + wait_us
--     -> {0, which, retry_us, reason, used_r, used_i, used_o, reset_us}
--        which: 0 bucket, 1 requests, 2 input, 3 output; reason: 0 exhausted, 1 wait too long
--   adjust window_us id from_r from_i from_o to_r to_i to_o
--     replaces what the reservation charged, in place (all zero: removes it)
--     -> 1, or 0 when the reservation has expired or is gone

local log, amt, tat_key = KEYS[1], KEYS[2], KEYS[3]
local op = ARGV[1]
local window = tonumber(ARGV[2])

-- Redis's clock, not the caller's: instances' clock skew cannot matter.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

-- Numbers handed to redis.call become strings with 14 significant digits, which would round
-- microsecond timestamps (16 digits) by up to 50 µs: every time goes through this.
local function int(x)
  return string.format('%.0f', x)
end

local function parse(s)
  local r, i, o = string.match(s, '^(%d+):(%d+):(%d+)$')
  return { tonumber(r), tonumber(i), tonumber(o) }
end

local sums = { 'ur', 'ui', 'uo' }

-- Drops the entries that no longer count (admitted at or before now - window).
local function trim()
  local expired = redis.call('ZRANGEBYSCORE', log, '-inf', int(now - window))
  if #expired == 0 then return end
  local total = { 0, 0, 0 }
  for _, id in ipairs(expired) do
    local s = redis.call('HGET', amt, id)
    if s then
      local a = parse(s)
      for r = 1, 3 do total[r] = total[r] + a[r] end
    end
  end
  redis.call('ZREMRANGEBYSCORE', log, '-inf', int(now - window))
  -- In chunks: Lua's unpack has a small stack.
  for k = 1, #expired, 1000 do
    redis.call('HDEL', amt, unpack(expired, k, math.min(k + 999, #expired)))
  end
  for r = 1, 3 do
    if total[r] > 0 then
      local left = redis.call('HINCRBY', amt, sums[r], -total[r])
      if left < 0 then redis.call('HSET', amt, sums[r], 0) end
    end
  end
end

local function used()
  local u = redis.call('HMGET', amt, 'ur', 'ui', 'uo')
  return { tonumber(u[1] or '0'), tonumber(u[2] or '0'), tonumber(u[3] or '0') }
end

-- How long until everything counted has expired.
local function reset()
  local last = redis.call('ZRANGE', log, -1, -1, 'WITHSCORES')
  if #last == 0 then return 0 end
  return math.max(0, tonumber(last[2]) + window - now)
end

trim()

if op == 'adjust' then
  local id = ARGV[3]
  local s = redis.call('HGET', amt, id)
  if not s then return 0 end
  local old = parse(s)
  local new = {}
  local any = false
  for r = 1, 3 do
    new[r] = math.max(0, old[r] - tonumber(ARGV[3 + r])) + tonumber(ARGV[6 + r])
    if new[r] > 0 then any = true end
    if new[r] ~= old[r] then redis.call('HINCRBY', amt, sums[r], new[r] - old[r]) end
  end
  if any then
    redis.call('HSET', amt, id, int(new[1]) .. ':' .. int(new[2]) .. ':' .. int(new[3]))
  else
    redis.call('HDEL', amt, id)
    redis.call('ZREM', log, id)
  end
  return 1
end

-- reserve
local limit = { tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]) }
local demand = { tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]) }
local interval, burst, max_wait = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local u = used()

local function refuse(which, retry, reason)
  return { 0, which, retry, reason, u[1], u[2], u[3], reset() }
end

-- The bucket first: a request it makes wait is stamped in the windows at the time it is let
-- through (now + wait), so the windows count it where the upstream will.
local slot = now
local new_tat = nil
if interval > 0 and demand[1] > 0 then
  local tat = tonumber(redis.call('GET', tat_key) or '0')
  new_tat = math.max(tat, now) + demand[1] * interval
  local allow_at = new_tat - burst * interval
  if allow_at > now then
    local wait = allow_at - now
    if max_wait < 0 then return refuse(0, wait, 0) end
    if wait > max_wait then return refuse(0, wait, 1) end
    slot = allow_at
  end
end

-- The windows: everything still counted (future-stamped entries included) plus this demand must
-- fit every limit. The longest wait for room is the answer when it does not.
local which, longest = nil, 0
local entries = nil
for r = 1, 3 do
  if limit[r] > 0 and u[r] + demand[r] > limit[r] then
    local need = u[r] + demand[r] - limit[r]
    entries = entries or redis.call('ZRANGE', log, 0, -1, 'WITHSCORES')
    local freed, wait = 0, window
    for k = 1, #entries, 2 do
      local s = redis.call('HGET', amt, entries[k])
      if s then freed = freed + parse(s)[r] end
      if freed >= need then
        wait = math.max(0, tonumber(entries[k + 1]) + window - now)
        break
      end
    end
    if which == nil or wait > longest then which, longest = r, wait end
  end
end
if which ~= nil then return refuse(which, longest, 0) end

local id = ARGV[12]
redis.call('ZADD', log, int(slot), id)
redis.call('HSET', amt, id, int(demand[1]) .. ':' .. int(demand[2]) .. ':' .. int(demand[3]))
for r = 1, 3 do
  if demand[r] > 0 then u[r] = redis.call('HINCRBY', amt, sums[r], demand[r]) end
end
if new_tat ~= nil then
  redis.call('SET', tat_key, int(new_tat), 'PX', math.floor((new_tat - now) / 1000) + 1000)
end
-- The state frees itself: a minute after its last entry (a crashed instance's holds included).
local ttl = math.floor((slot - now + window) / 1000) + 1000
redis.call('PEXPIRE', log, ttl)
redis.call('PEXPIRE', amt, ttl)
return { 1, now, slot - now, u[1], u[2], u[3], reset() }
