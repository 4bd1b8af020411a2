-- Publishes one room event atomically: the ordering check, the history append,
-- the last-seq update and the pub/sub fan-out happen in one step, so no two
-- publishers can interleave and a retried publish is recognised as a duplicate.
--
-- KEYS[1] the room's last-seq string, KEYS[2] the room's history stream.
-- ARGV: seq, envelope JSON, committed_at_ms, history events max, channel, key
-- TTL ms, published-through (the seq through which the ledger vouches that
-- every event reached the bus; -1 when the publisher does not know).
-- Returns {1, seq} published, {0, last} duplicate, {2, expected} gap.
-- Seqs are below 2^53 (Lua numbers are doubles); seq 0 means "nothing yet"
-- and is never published (it is also no valid stream id). The rules are those
-- of check_order in rules.rs.
local seq = tonumber(ARGV[1])
if seq < 1 then
  return {0, 0}
end
local vouched = tonumber(ARGV[7]) + 1 == seq
local last = redis.call('GET', KEYS[1])
if last then
  last = tonumber(last)
  if seq <= last then
    return {0, last}
  end
  if seq ~= last + 1 then
    if not vouched then
      return {2, last + 1}
    end
    -- The room's record is older than what the ledger vouches for (Redis
    -- came back from an old snapshot): its history starts over here.
    redis.call('DEL', KEYS[2])
  end
else
  -- No record of the room: it starts at seq 1, or goes on where the ledger
  -- vouches for every earlier event. A stream left without its seq key
  -- (expired apart) would reject the explicit id, so start over.
  if seq ~= 1 and not vouched then
    return {2, 1}
  end
  redis.call('DEL', KEYS[2])
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], ARGV[1] .. '-0', 'e', ARGV[2], 'c', ARGV[3])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[6])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
redis.call('PUBLISH', ARGV[5], ARGV[2])
return {1, seq}
