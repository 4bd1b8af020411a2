-- Applies room and global parts of leaderboard updates, each once (see scripts.rs).
local CAP = 4503599627370495
local ttl = ARGV[1]
local k = 1
local names = nil
if ARGV[2] == '1' then names = KEYS[1]; k = 2 end
local n = tonumber(ARGV[3])
local a = 4
local out = {}
for i = 1, n do
  local nb = tonumber(ARGV[a])
  local mark = ARGV[a + 1] == '1'
  local member = ARGV[a + 2]
  local amount_str = ARGV[a + 3]
  local amount = tonumber(amount_str)
  local marker = KEYS[k]
  local status = 1
  if mark and not redis.call('SET', marker, '1', 'NX', 'EX', ttl) then
    status = 0
  end
  if status == 1 then
    -- Totals stay within the cap and amounts within 10^15, so every sum
    -- here is below 2^53 and exact, and so is the undo.
    local scores = {}
    for j = 1, nb do
      scores[j] = tonumber(redis.call('ZINCRBY', KEYS[k + j], amount_str, member))
      if scores[j] > CAP or scores[j] < -CAP then status = 2 end
    end
    if status == 2 then
      -- Negated as a string: a Lua number becomes a 14-digit string.
      local negated = '-' .. amount_str
      if string.sub(amount_str, 1, 1) == '-' then negated = string.sub(amount_str, 2) end
      for j = 1, nb do
        local back = tonumber(redis.call('ZINCRBY', KEYS[k + j], negated, member))
        if back == 0 then redis.call('ZREM', KEYS[k + j], member) end
      end
      if mark then redis.call('DEL', marker) end
    else
      for j = 1, nb do
        local s = scores[j]
        if s == 0 then
          redis.call('ZREM', KEYS[k + j], member)
        elseif s == amount then
          -- A new member, maybe a new key: the expiry is a function of the
          -- key name, so setting it when a member appears is enough.
          local exp = ARGV[a + 5 + j]
          if exp ~= '0' then redis.call('EXPIREAT', KEYS[k + j], exp) end
        end
      end
      if names and ARGV[a + 4] ~= '' then redis.call('HSET', names, ARGV[a + 4], ARGV[a + 5]) end
    end
  end
  out[i] = status
  a = a + 6 + nb
  k = k + 1 + nb
end
return out
