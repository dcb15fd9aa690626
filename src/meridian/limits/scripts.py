"""The Lua scripts behind `meridian.limits.redis`: each runs atomically in Redis, so an
admission sees every other replica's reservations, as one process's admissions see each
other's between two awaits. ADMIT and SETTLE answer with one string of space-separated
fields (an empty field: none), which meridian parses with one split: an array of a dozen
replies costs the client's parser ten times as much CPU. Dollars are formatted ``%.17g``
and month counters passed as Redis stored them (Lua's own number format keeps 14 digits).

Reservations are ``id:tokens:usd`` members scored by their expiry; settled tokens are
``id:tokens`` members scored by when they settled; both windows are pruned by score with
the caller's clock before anything is judged. Subtractions are written ``0 - x``: Lua's
``-0`` would reach Redis as the string "-0", which HINCRBY refuses.
"""

_PRUNE = """
local st, req, tok, fly = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now = tonumber(ARGV[1])
local dead = redis.call('ZRANGEBYSCORE', fly, '-inf', now)
for _, m in ipairs(dead) do
  local t, u = string.match(m, '^[^:]+:([^:]+):(.+)$')
  redis.call('HINCRBY', st, 'rtok', 0 - tonumber(t))
  redis.call('HINCRBYFLOAT', st, 'rusd', 0 - tonumber(u))
  redis.call('HINCRBY', st, 'par', -1)
end
if #dead > 0 then redis.call('ZREMRANGEBYSCORE', fly, '-inf', now) end
local horizon = now - 60
local old = redis.call('ZRANGEBYSCORE', tok, '-inf', horizon)
for _, m in ipairs(old) do
  redis.call('HINCRBY', st, 'tokw', 0 - tonumber(string.match(m, ':(%d+)$')))
end
if #old > 0 then redis.call('ZREMRANGEBYSCORE', tok, '-inf', horizon) end
redis.call('ZREMRANGEBYSCORE', req, '-inf', horizon)
"""

# ARGV: now, id, tokens, usd, rpm, tpm, max_parallel, budget tokens, budget usd (-1: none),
# hold_s, keep_s, month_ttl_s, seed tokens, seed usd ('' : no seed).
ADMIT = (
    """
if redis.call('EXISTS', KEYS[6]) == 1 then return '-2' end
"""
    + _PRUNE
    + """
local mon = KEYS[5]
local tokens, usd = tonumber(ARGV[3]), tonumber(ARGV[4])
local rpm, tpm, maxpar = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local btok, busd = tonumber(ARGV[8]), tonumber(ARGV[9])
if ARGV[13] ~= '' then
  -- The ledger's count, unless Redis counted more (settles the ledger has not written yet).
  local cur = redis.call('HMGET', mon, 'tok', 'usd')
  if not cur[1] or tonumber(ARGV[13]) > tonumber(cur[1]) then
    redis.call('HSET', mon, 'tok', ARGV[13])
  end
  if not cur[2] or tonumber(ARGV[14]) > tonumber(cur[2]) then
    redis.call('HSET', mon, 'usd', ARGV[14])
  end
  redis.call('EXPIRE', mon, ARGV[12])
elseif redis.call('EXISTS', mon) == 0 then
  return '-1'
end
local s = redis.call('HMGET', st, 'rtok', 'rusd', 'par', 'tokw')
local rtok, rusd = tonumber(s[1]) or 0, tonumber(s[2]) or 0
local par, tokw = tonumber(s[3]) or 0, math.max(0, tonumber(s[4]) or 0)
local m = redis.call('HMGET', mon, 'tok', 'usd')
local utok, uusd = tonumber(m[1]) or 0, tonumber(m[2]) or 0
local utoks = m[1] or '0'
local nreq = redis.call('ZCARD', req)
local ok = not (
  (btok >= 0 and (utok >= btok or utok + rtok + tokens > btok)) or
  (busd >= 0 and (uusd >= busd or uusd + rusd + usd > busd)) or
  (maxpar >= 0 and par >= maxpar) or
  (rpm >= 0 and nreq >= rpm) or
  (tpm >= 0 and tokw + rtok + tokens > tpm))
if ok then
  if rpm >= 0 then
    redis.call('ZADD', req, ARGV[1], ARGV[2])
    nreq = nreq + 1
  end
  redis.call('ZADD', fly, now + tonumber(ARGV[10]), ARGV[2] .. ':' .. ARGV[3] .. ':' .. ARGV[4])
  rtok = redis.call('HINCRBY', st, 'rtok', tokens)
  rusd = tonumber(redis.call('HINCRBYFLOAT', st, 'rusd', usd))
  par = redis.call('HINCRBY', st, 'par', 1)
end
for _, k in ipairs({KEYS[1], KEYS[2], KEYS[3], KEYS[4]}) do redis.call('EXPIRE', k, ARGV[11]) end
local first = redis.call('ZRANGE', req, 0, 0, 'WITHSCORES')
local last = redis.call('ZRANGE', req, -1, -1, 'WITHSCORES')
local tlast = redis.call('ZRANGE', tok, -1, -1, 'WITHSCORES')
local out = {ok and 1 or 0, redis.call('HINCRBY', st, 'v', 1), nreq, first[2] or '',
  last[2] or '', tokw, tlast[2] or '', rtok, string.format('%.17g', rusd), par, utoks,
  string.format('%.17g', uusd)}
if not ok and tpm >= 0 then
  for _, v in ipairs(redis.call('ZRANGE', tok, 0, -1, 'WITHSCORES')) do out[#out + 1] = v end
end
return table.concat(out, ' ')
"""
)

# KEYS: st, tok, fly, month, the id's mark. ARGV: the reservation (id:tokens:usd), id,
# tokens used, usd used, now, count tokens (1/0), keep_s.
SETTLE = """
local st, tok, fly, mon = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
-- Once per call, however often a settle whose answer was lost is sent again.
if not redis.call('SET', KEYS[5], '1', 'NX', 'EX', ARGV[7]) then return '-2' end
if redis.call('ZREM', fly, ARGV[1]) == 1 then
  local t, u = string.match(ARGV[1], '^[^:]+:([^:]+):(.+)$')
  if redis.call('HINCRBY', st, 'par', -1) <= 0 then
    redis.call('HSET', st, 'par', 0, 'rtok', 0, 'rusd', 0)
  else
    redis.call('HINCRBY', st, 'rtok', 0 - tonumber(t))
    redis.call('HINCRBYFLOAT', st, 'rusd', 0 - tonumber(u))
  end
end
local n = tonumber(ARGV[3])
if n > 0 and ARGV[6] == '1' then
  redis.call('ZADD', tok, ARGV[5], ARGV[2] .. ':' .. ARGV[3])
  redis.call('HINCRBY', st, 'tokw', n)
end
if redis.call('EXISTS', mon) == 1 then
  redis.call('HINCRBY', mon, 'tok', n)
  redis.call('HINCRBYFLOAT', mon, 'usd', ARGV[4])
end
for _, k in ipairs({st, tok, fly}) do redis.call('EXPIRE', k, ARGV[7]) end
local s = redis.call('HMGET', st, 'rtok', 'rusd', 'par', 'tokw')
local tlast = redis.call('ZRANGE', tok, -1, -1, 'WITHSCORES')
return table.concat({redis.call('HINCRBY', st, 'v', 1), tonumber(s[1]) or 0, s[2] or '0',
  tonumber(s[3]) or 0, math.max(0, tonumber(s[4]) or 0), tlast[2] or ''}, ' ')
"""

# An admission whose caller gave up waiting (a timeout) may still run later: RELEASE marks
# its id abandoned (ADMIT then does nothing) and frees its reservation if it was made.
# KEYS: st, fly, the id's mark. ARGV: the reservation (id:tokens:usd), keep_s.
RELEASE = """
redis.call('SET', KEYS[3], '1', 'EX', ARGV[2])
if redis.call('ZREM', KEYS[2], ARGV[1]) == 1 then
  local t, u = string.match(ARGV[1], '^[^:]+:([^:]+):(.+)$')
  if redis.call('HINCRBY', KEYS[1], 'par', -1) <= 0 then
    redis.call('HSET', KEYS[1], 'par', 0, 'rtok', 0, 'rusd', 0)
  else
    redis.call('HINCRBY', KEYS[1], 'rtok', 0 - tonumber(t))
    redis.call('HINCRBYFLOAT', KEYS[1], 'rusd', 0 - tonumber(u))
  end
  return 1
end
return 0
"""
