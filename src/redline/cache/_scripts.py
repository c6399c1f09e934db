"""Lua scripts run by the Redis tier; each makes one round trip atomic.

READ returns, per key, the entry, or nil when the key is missing or stale (a stale entry is
unlinked); the last element is the server time in µs. It is the read path that trusts
nothing held in the client: used while the invalidation stream is down, before the client
knows the server's clock, and always with ``RedisTier(consistency="strict")``.

WRITE stores entries with a TTL, stamping the header's ``asof`` with the server time minus the
age the caller reports (how long ago the value was read from its source, in µs) and its
``expires`` with the server time plus the TTL; it skips an entry whose tags were invalidated
at or after its ``asof`` time. It returns the server time and, per key, 1 (stored) or 0.

INVALIDATE sets each tag clock to the server time with the given TTL and returns that time.

UNLOCK deletes a load lock only if it still holds the caller's token (its lease may have
expired and another process taken it).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property


@dataclass(frozen=True)
class Script:
    name: str
    source: str

    @cached_property
    def sha(self) -> str:
        return hashlib.sha1(self.source.encode()).hexdigest()


_STALE = """
local function stale(v, tp)
  if #v < 20 or string.byte(v, 1) ~= 162 then return false end
  local _, _, asof, _, n, pos = struct.unpack('>BBddH', v)
  for _ = 1, n do
    -- A truncated header must not fail the whole batch: the client drops the entry.
    if pos + 1 > #v then return false end
    local len
    len, pos = struct.unpack('>H', v, pos)
    local at = redis.call('GET', tp .. string.sub(v, pos, pos + len - 1))
    if at and tonumber(at) >= asof then return true end
    pos = pos + len
  end
  return false
end
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
"""

READ = Script(
    "read",
    _STALE
    + """
local out = {}
for _, k in ipairs(KEYS) do
  local v = redis.call('GET', k)
  if v and stale(v, ARGV[1]) then
    redis.call('UNLINK', k)
    v = false
  end
  out[#out + 1] = v
end
out[#out + 1] = now()
return out
""",
)

WRITE = Script(
    "write",
    _STALE
    + """
local t = now()
local packed = struct.pack('>d', t - tonumber(ARGV[2]))
local out = {t}
for i, k in ipairs(KEYS) do
  local v = ARGV[2 + 2 * i]
  if #v >= 20 then
    local expires = struct.pack('>d', t + tonumber(ARGV[1 + 2 * i]) * 1000)
    v = string.sub(v, 1, 2) .. packed .. expires .. string.sub(v, 19)
  end
  if stale(v, ARGV[1]) then
    out[#out + 1] = 0
  else
    redis.call('SET', k, v, 'PX', ARGV[1 + 2 * i])
    out[#out + 1] = 1
  end
end
return out
""",
)

INVALIDATE = Script(
    "invalidate",
    """
local t = redis.call('TIME')
local at = tonumber(t[1]) * 1000000 + tonumber(t[2])
for _, k in ipairs(KEYS) do
  redis.call('SET', k, string.format('%.0f', at), 'PX', ARGV[1])
end
return at
""",
)

UNLOCK = Script(
    "unlock",
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('UNLINK', KEYS[1])
end
return 0
""",
)
