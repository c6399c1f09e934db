"""Key layout in Redis: prefix, namespace, version, over-long keys, and key validation."""

import re

import pytest

from redline.cache import CacheKeyError

PREFIX = "redline:default:1:k:"


def stored(raw):
    return sorted(key.decode() for key in raw.keys("*:k:*"))


async def test_redis_key_is_prefix_namespace_version_and_key(flavour, raw):
    cache = flavour.cache(key_prefix="app", namespace="shop", version=7)
    await cache.set("item:1", "x")
    assert stored(raw) == ["app:shop:7:k:item:1"]


async def test_a_new_version_does_not_see_the_old_versions_entries(flavour):
    v1 = flavour.cache(version=1)
    v2 = flavour.cache(version=2)
    await v1.set("k", "shape 1")
    assert await v2.get("k") is None
    await v2.set("k", "shape 2")
    assert await v1.get("k") == "shape 1"


async def test_over_long_key_is_hashed_to_a_bounded_redis_key_and_round_trips(flavour, raw):
    cache = flavour.cache()
    reader = flavour.build(l1=None, l2=flavour.tier())
    key = "user:42:" + "x" * 1000
    await cache.set(key, "long")

    [rkey] = stored(raw)
    assert len(rkey) <= len(PREFIX) + 250
    assert rkey.startswith(PREFIX + "user:42:xxx")
    assert await reader.get(key) == "long"
    assert await cache.get(key) == "long"


async def test_over_long_keys_differing_only_at_the_end_do_not_collide(flavour, raw):
    cache = flavour.cache()
    reader = flavour.build(l1=None, l2=flavour.tier())
    head = "k" * 5000
    await cache.set(head + "a", 1)
    await cache.set(head + "b", 2)

    assert len(stored(raw)) == 2
    assert await reader.get(head + "a") == 1
    assert await reader.get(head + "b") == 2


async def test_over_long_key_keeps_a_head_that_prefix_patterns_match(flavour, raw):
    cache = flavour.cache()
    await cache.set("user:42:" + "x" * 1000, 1)
    assert await cache.invalidate_pattern("user:42:*") == 1
    assert stored(raw) == []


@pytest.mark.parametrize("key", [42, b"k", None, ("a",)])
async def test_non_str_key_raises_cache_key_error_naming_the_key(flavour, raw, key):
    cache = flavour.cache()
    calls = {
        "get": (key,),
        "set": (key, 1),
        "delete": (key,),
        "get_or_set": (key, lambda: 1),
        "get_many": (["ok", key],),
        "set_many": ({key: 1},),
    }
    for name, args in calls.items():
        with pytest.raises(CacheKeyError, match=re.escape(f"cache key {key!r}")):
            await getattr(cache, name)(*args)
    assert stored(raw) == []


@pytest.mark.parametrize("tags", [[1], [""], [b"t"], 7])
async def test_malformed_tags_raise_cache_key_error(flavour, tags):
    cache = flavour.cache()
    with pytest.raises(CacheKeyError, match="tag"):
        await cache.set("k", 1, tags=tags)


@pytest.mark.parametrize("namespace", ["", "a*", "b?", "c[d]"])
def test_namespace_with_glob_characters_is_refused(flavour, namespace):
    with pytest.raises(CacheKeyError, match="namespace"):
        flavour.cls.memory(namespace=namespace)
