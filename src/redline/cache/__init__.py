"""Two-tier cache: in-process L1 in front of Redis L2, async (Cache) and sync (SyncCache)."""

from redline.cache._async.cache import Cache
from redline.cache._codecs import Codec, JsonCodec, MsgpackCodec, PickleCodec
from redline.cache._exceptions import CacheKeyError, CodecError, RedlineCacheError
from redline.cache._memory import MemoryTier
from redline.cache._redis_tier import RedisTier
from redline.cache._sync.cache import SyncCache

__all__ = [
    "Cache",
    "CacheKeyError",
    "Codec",
    "CodecError",
    "JsonCodec",
    "MemoryTier",
    "MsgpackCodec",
    "PickleCodec",
    "RedisTier",
    "RedlineCacheError",
    "SyncCache",
]
