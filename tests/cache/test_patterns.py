"""invalidate_pattern and clear: Redis glob deletes in both tiers, by SCAN, never KEYS."""

import pytest

from redline.cache import CacheKeyError

PREFIX = "redline:default:1:k:"


def stored_keys(raw, prefix=PREFIX):
    return {key.decode().removeprefix(prefix) for key in raw.scan_iter(match=prefix + "*")}


async def test_pattern_removes_matching_keys_from_both_tiers_and_keeps_the_rest(flavour, raw):
    cache = flavour.cache()
    await cache.ready()
    keys = ["user:42:name", "user:42:email", "user:421:x", "user:43:x", "user:4:42:x"]
    await cache.set_many({key: key.upper() for key in keys})
    await cache.fill_l1(keys)
    assert set(keys) <= set(cache.l1.data)

    assert await cache.invalidate_pattern("user:42:*") == 2

    assert stored_keys(raw) == {"user:421:x", "user:43:x", "user:4:42:x"}
    assert set(cache.l1.data) == {"user:421:x", "user:43:x", "user:4:42:x"}
    assert await cache.get("user:42:name") is None
    assert await cache.get("user:421:x") == "USER:421:X"


async def test_pattern_walks_redis_with_scan_and_unlink_never_keys(flavour, commandstats):
    cache = flavour.cache()
    await cache.set_many({f"user:42:{i}": i for i in range(10)})
    commandstats.start()
    assert await cache.invalidate_pattern("user:42:*") == 10
    commands = commandstats.delta()
    assert "keys" not in commands
    assert commands["scan"] >= 1
    assert commands["unlink"] >= 1


async def test_pattern_over_5000_keys_deletes_them_all_in_batches(flavour, raw, commandstats):
    # Not a test of timeouts: a slow CI core must not open the breaker (default 50 ms).
    cache = flavour.cache(timeout=5.0)
    await cache.set_many({f"user:42:{i}": i for i in range(5000)})
    await cache.set_many({f"user:43:{i}": i for i in range(100)})
    commandstats.start()

    assert await cache.invalidate_pattern("user:42:*") == 5000

    commands = commandstats.delta()
    assert commands["scan"] > 1
    assert commands["unlink"] > 1
    assert stored_keys(raw) == {f"user:43:{i}" for i in range(100)}
    assert await cache.get_many([f"user:42:{i}" for i in range(0, 5000, 50)]) == {}


ESCAPES = [
    # (pattern, keys it removes): the same selection in L1 (regex) and in L2 (SCAN MATCH)
    (r"a\[1\]", {"a[1]"}),
    ("a[1]", {"a1"}),
    ("a[^1]", {"a2"}),
    (r"what\?", {"what?"}),
    ("what?", {"what?", "whatX"}),
    (r"star\*", {"star*"}),
]
ESCAPE_KEYS = ["a[1]", "a1", "a2", "what?", "whatX", "star*", "starry"]


@pytest.mark.parametrize(("pattern", "removed"), ESCAPES)
async def test_pattern_treats_redis_glob_escapes_like_redis(flavour, raw, pattern, removed):
    cache = flavour.cache()
    await cache.ready()
    await cache.set_many({key: key for key in ESCAPE_KEYS})
    await cache.fill_l1(ESCAPE_KEYS)

    assert await cache.invalidate_pattern(pattern) == len(removed)

    kept = set(ESCAPE_KEYS) - removed
    assert stored_keys(raw) == kept
    assert set(cache.l1.data) == kept


@pytest.mark.parametrize(("pattern", "removed"), ESCAPES)
async def test_pattern_on_a_memory_only_cache_matches_like_redis(flavour, pattern, removed):
    cache = flavour.memory()
    await cache.set_many({key: key for key in ESCAPE_KEYS})
    assert await cache.invalidate_pattern(pattern) == len(removed)
    assert set(cache.l1.data) == set(ESCAPE_KEYS) - removed


async def test_empty_or_non_str_pattern_is_refused(flavour):
    cache = flavour.cache()
    for pattern in ("", None, b"user:*"):
        with pytest.raises(CacheKeyError, match="pattern"):
            await cache.invalidate_pattern(pattern)


async def test_clear_empties_its_namespace_and_leaves_other_namespaces(flavour, raw):
    shop = flavour.cache(namespace="shop")
    blog = flavour.cache(namespace="blog")
    await shop.set_many({f"k{i}": i for i in range(10)})
    await blog.set_many({f"k{i}": i for i in range(10)})

    await shop.clear()

    assert stored_keys(raw, "redline:shop:1:k:") == set()
    assert stored_keys(raw, "redline:blog:1:k:") == {f"k{i}" for i in range(10)}
    assert len(shop.l1) == 0
    assert await shop.get("k1") is None
    assert await blog.get("k1") == 1
