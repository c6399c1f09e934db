"""Tag invalidation: O(1) per tag, in both tiers, across processes, and against in-flight loads."""

import asyncio
import random
import threading
from time import perf_counter

PREFIX = "redline:default:1:k:"


def gated_loader(flavour, value, started: threading.Event, release: threading.Event):
    """A loader of the flavour's kind that signals ``started`` and waits for ``release``."""
    if flavour.is_async:

        async def load():
            started.set()
            await asyncio.to_thread(release.wait, 5)
            return value

        return load

    def load_sync():
        started.set()
        release.wait(5)
        return value

    return load_sync


async def test_invalidated_tag_makes_its_entries_misses_in_l1_and_l2(flavour, raw):
    cache = flavour.cache()
    reader = flavour.build(l1=None, l2=flavour.tier())
    await cache.ready()
    await cache.set("a", 1, tags=["t1"])
    await cache.set("ab", 2, tags=["t1", "t2"])
    await cache.fill_l1(["a", "ab"])
    assert {"a", "ab"} <= set(cache.l1.data)

    await cache.invalidate_tags("t1")
    # O(1): nothing was deleted, the entries became stale.
    assert raw.exists(PREFIX + "a", PREFIX + "ab") == 2
    assert await cache.get("a") is None
    assert await cache.get("ab") is None
    assert await reader.get("a") is None
    assert "a" not in cache.l1.data
    # The Lua read removes a stale entry from Redis for everyone.
    assert raw.exists(PREFIX + "a", PREFIX + "ab") == 0


async def test_untagged_and_other_tag_entries_survive_an_invalidation(flavour):
    cache = flavour.cache()
    reader = flavour.build(l1=None, l2=flavour.tier())
    await cache.set("a", 1, tags=["t1"])
    await cache.set("b", 2, tags=["t2"])
    await cache.set("plain", 3)

    await cache.invalidate_tags("t1")
    for face in (cache, reader):
        assert await face.get("b") == 2
        assert await face.get("plain") == 3
        assert await face.get("a") is None


async def test_entry_set_after_the_invalidation_is_a_hit(flavour):
    cache = flavour.cache()
    reader = flavour.build(l1=None, l2=flavour.tier())
    await cache.ready()
    await cache.set("a", "old", tags=["t"])
    await cache.invalidate_tags("t")
    await flavour.settle()
    await cache.set("a", "new", tags=["t"])

    assert await cache.get("a") == "new"
    assert "a" in cache.l1.data
    assert await reader.get("a") == "new"


async def test_get_or_set_after_the_invalidation_loads_and_caches_again(flavour):
    cache = flavour.cache()
    await cache.set("a", "old", tags=["t"])
    await cache.invalidate_tags("t")
    assert await cache.get_or_set("a", lambda: "reloaded", tags=["t"]) == "reloaded"
    assert await cache.get_or_set("a", lambda: "not called", tags=["t"]) == "reloaded"


async def test_invalidation_by_one_cache_stops_another_cache_serving_its_l1_copy(flavour):
    a = flavour.cache()
    b = flavour.cache()
    await b.ready()
    await a.set("k", "v", tags=["t"])
    await flavour.settle()
    assert await b.get("k") == "v"
    assert "k" in b.l1.data

    await a.invalidate_tags("t")

    async def b_misses():
        return await b.get("k") is None

    await flavour.eventually(b_misses, timeout=1.0)


async def test_invalidating_a_tag_of_100k_entries_costs_what_a_tag_of_one_costs(
    flavour, raw, commandstats
):
    cache = flavour.cache()
    await cache.ready()
    await cache.set_many({f"item:{i}": i for i in range(100_000)}, tags=["big"])
    await cache.set("single", 1, tags=["small"])
    await cache.invalidate_tags("warm-up")  # the first call loads the Lua script
    await flavour.settle()

    async def invalidate(tag):
        commandstats.start()
        start = perf_counter()
        await cache.invalidate_tags(tag)
        elapsed = perf_counter() - start
        await flavour.settle()  # includes the listener learning the tag's new time
        return commandstats.delta(), elapsed

    big_commands, _ = await invalidate("big")
    small_commands, _ = await invalidate("small")
    assert big_commands == small_commands
    assert sum(big_commands.values()) < 10
    # Timing is noisy: compare the best of three, with a generous factor.
    big = min([(await invalidate("big"))[1] for _ in range(3)])
    small = min([(await invalidate("small"))[1] for _ in range(3)])
    assert big < 10 * small + 0.002

    sample = [f"item:{i}" for i in random.Random(42).sample(range(100_000), 1000)]
    assert await cache.get_many(sample) == {}
    assert raw.exists(*(PREFIX + key for key in sample)) == 0
    assert await cache.get("single") is None


async def test_value_loading_while_its_tag_is_invalidated_is_not_served_afterwards(flavour, raw):
    cache = flavour.cache()
    reader = flavour.build(l1=None, l2=flavour.tier())
    started, release = threading.Event(), threading.Event()
    loader = gated_loader(flavour, "before invalidation", started, release)

    load = cache.in_background("get_or_set", "k", loader, tags=["t"])
    assert await asyncio.to_thread(started.wait, 2)
    await cache.invalidate_tags("t")
    release.set()

    # The caller that asked before the invalidation gets the value; nobody after does.
    assert await asyncio.wait_for(load, timeout=5) == "before invalidation"
    assert await cache.get("k") is None
    assert await reader.get("k") is None
    assert not raw.exists(PREFIX + "k")
    assert await cache.get_or_set("k", lambda: "after", tags=["t"]) == "after"


async def test_a_process_started_after_an_invalidation_does_not_serve_older_entries(
    flavour, raw, commandstats
):
    writer = flavour.cache()
    await writer.ready()
    await writer.set("a", 1, tags=["t1"])
    await writer.set("b", 2, tags=["t2"])
    await writer.invalidate_tags("t1")

    # A new process knows nothing of t1's history: it must read it from Redis.
    late = flavour.cache()
    await late.ready()
    await late.set("warm-the-clock", 0)
    commandstats.start()
    assert await late.get("a") is None
    assert await late.get("b") == 2
    assert not raw.exists(PREFIX + "a")
    if flavour.consistency == "tracked":
        # Tag times unknown here are fetched once (MGET), then kept current by the stream.
        assert commandstats.delta().get("mget", 0) >= 2
        late.l1.clear()
        commandstats.start()
        assert await late.get("b") == 2
        assert commandstats.reads() == 1


async def test_tracked_reads_are_one_mget_and_strict_reads_one_script(flavour, commandstats):
    cache = flavour.build(l1=None, l2=flavour.tier())
    writer = flavour.cache()
    await writer.ready()
    await writer.set("k", "v", tags=["t"])
    await cache.get("k")  # learns the server clock and the tag's time
    if flavour.consistency == "tracked":
        await flavour.eventually(lambda: cache.cache._l2.tracking)
    await cache.get("k")
    commandstats.start()
    assert await cache.get("k") == "v"
    moved = commandstats.delta()
    if flavour.consistency == "tracked":
        assert moved == {"mget": 1}
    else:
        assert moved.get("evalsha", 0) == 1 and "mget" not in moved


async def test_tracked_read_sees_an_invalidation_by_another_process_once_its_message_arrives(
    flavour,
):
    reader = flavour.build(l1=None, l2=flavour.tier())
    writer = flavour.cache()
    await writer.ready()
    await writer.set("k", "v", tags=["t"])
    await reader.get("k")
    await flavour.eventually(lambda: reader.cache._l2.tracking)
    assert await reader.get("k") == "v"

    await writer.invalidate_tags("t")
    await flavour.settle()
    assert await reader.get("k") is None
