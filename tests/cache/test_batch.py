"""Batch operations: one Redis round trip per batch, L1 first, and warm() from any source."""

import struct

PREFIX = "redline:default:1:k:"
KEYS = [f"k{i}" for i in range(100)]


async def test_get_many_of_100_keys_in_redis_is_one_round_trip(flavour, commandstats):
    cache = flavour.cache()
    await cache.ready()
    await cache.set_many({key: i for i, key in enumerate(KEYS)})
    cache.l1.clear()

    commandstats.start()
    found = await cache.get_many(KEYS)

    assert found == {key: i for i, key in enumerate(KEYS)}
    assert commandstats.reads() == 1
    assert set(commandstats.delta()) <= {"mget", "evalsha", "get", "time"}
    assert cache.stats()["l2"]["hits"] == 100
    assert set(KEYS) <= set(cache.l1.data)


async def test_get_many_serves_l1_first_and_asks_redis_only_for_the_rest(flavour, commandstats):
    cache = flavour.cache()
    await cache.ready()
    await cache.set_many({key: i for i, key in enumerate(KEYS)})
    await cache.fill_l1(KEYS[:50])
    cache.l1.clear()
    await cache.get_many(KEYS[:50])
    assert set(KEYS[:50]) == set(cache.l1.data)

    hits = cache.stats()["l2"]["hits"]
    commandstats.start()
    found = await cache.get_many(KEYS)

    assert found == {key: i for i, key in enumerate(KEYS)}
    assert commandstats.reads() == 1
    # Redis is asked only for the 50 keys L1 did not have.
    assert cache.stats()["l2"]["hits"] - hits == 50


async def test_get_many_returns_only_the_keys_found(flavour):
    cache = flavour.cache()
    await cache.set_many({"a": 1, "c": 3})
    assert await cache.get_many(["a", "b", "c", "d"]) == {"a": 1, "c": 3}


async def test_get_many_over_500_keys_takes_one_round_trip_per_500(flavour, commandstats):
    # 1200 keys in one call: a slow CI core must not hit the 50 ms default timeout.
    cache = flavour.build(l1=None, l2=flavour.tier(timeout=5.0))
    keys = [f"k{i}" for i in range(1200)]
    await cache.set_many({key: key for key in keys})
    commandstats.start()
    assert await cache.get_many(keys) == {key: key for key in keys}
    assert commandstats.reads() == 3


async def test_one_undecodable_entry_does_not_cost_the_rest_of_its_batch(flavour, raw):
    cache = flavour.cache()
    await cache.set_many({key: i for i, key in enumerate(KEYS[:10])})
    cache.l1.clear()
    # Its header announces a tag its bytes do not hold.
    raw.set(PREFIX + "bad", struct.pack(">BBddH", 0xA2, 0, 1.0, 0.0, 1) + b"\x00")

    found = await cache.get_many([*KEYS[:10], "bad"])

    assert found == {key: i for i, key in enumerate(KEYS[:10])}
    assert not raw.exists(PREFIX + "bad")
    assert cache.stats()["decode_errors"] == 1


async def test_set_many_of_100_keys_is_one_script_call(flavour, commandstats):
    cache = flavour.cache()
    await cache.ready()
    commandstats.start()
    await cache.set_many({key: i for i, key in enumerate(KEYS)}, ttl=60)
    assert commandstats.scripts() == 1
    assert commandstats.delta()["set"] == 100
    assert await cache.get_many(KEYS) == {key: i for i, key in enumerate(KEYS)}


async def test_delete_many_of_100_keys_is_one_unlink(flavour, raw, commandstats):
    cache = flavour.cache()
    await cache.ready()
    await cache.set_many({key: i for i, key in enumerate(KEYS)})
    await cache.set("other", 1)

    commandstats.start()
    await cache.delete_many(KEYS)

    assert commandstats.delta() == {"unlink": 1}
    assert [key.decode() for key in raw.keys(PREFIX + "*")] == [PREFIX + "other"]
    assert await cache.get_many(KEYS) == {}
    assert not set(KEYS) & set(cache.l1.data)


async def test_warm_accepts_a_mapping_and_returns_its_count(flavour):
    cache = flavour.cache()
    assert await cache.warm({"a": 1, "b": 2}) == 2
    assert await cache.get_many(["a", "b"]) == {"a": 1, "b": 2}


async def test_warm_accepts_a_list_of_pairs_with_ttl_and_tags(flavour, raw):
    cache = flavour.cache()
    assert await cache.warm([("a", 1), ("b", 2)], ttl=30, tags=["t"]) == 2
    assert await cache.get_many(["a", "b"]) == {"a": 1, "b": 2}
    assert 0 < raw.pttl(PREFIX + "a") <= 30_000
    await cache.invalidate_tags("t")
    assert await cache.get_many(["a", "b"]) == {}


async def test_warm_accepts_a_generator_of_the_flavour_and_loads_it_in_batches(
    flavour, commandstats
):
    # 1200 keys in one call: a slow CI core must not hit the 50 ms default timeout.
    cache = flavour.build(l1=None, l2=flavour.tier(timeout=5.0))
    await cache.get("-load-scripts-")

    if flavour.is_async:

        async def pairs():
            for i in range(1200):
                yield f"k{i}", i

    else:

        def pairs():
            for i in range(1200):
                yield f"k{i}", i

    commandstats.start()
    assert await cache.warm(pairs()) == 1200
    assert commandstats.scripts() == 3
    assert await cache.get_many(["k0", "k499", "k500", "k1199"]) == {
        "k0": 0,
        "k499": 499,
        "k500": 500,
        "k1199": 1199,
    }
