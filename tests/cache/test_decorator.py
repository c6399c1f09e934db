"""@cache.cached: deterministic keys, templates, invalidation, and the right flavour of function."""

import functools
import os
import subprocess
import sys

import pytest

from redline.cache import CacheKeyError

ASYNC = pytest.mark.parametrize("flavour", ["async"], indirect=True)
SYNC = pytest.mark.parametrize("flavour", ["sync"], indirect=True)


def native(flavour, fn):
    """``fn`` as the kind of function the flavour's decorator wraps (same name, signature)."""
    if not flavour.is_async:
        return fn

    @functools.wraps(fn)
    async def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)

    return wrapper


async def resolve(flavour, result):
    return await result if flavour.is_async else result


@ASYNC
async def test_cached_async_function_runs_once_per_distinct_call(flavour):
    cache = flavour.cache().cache
    calls = []

    @cache.cached(ttl=60)
    async def double(x):
        calls.append(x)
        return x * 2

    assert await double(2) == 4
    assert await double(2) == 4
    assert await double(3) == 6
    assert calls == [2, 3]


@SYNC
async def test_cached_plain_function_runs_once_per_distinct_call(flavour):
    cache = flavour.cache().cache
    calls = []

    @cache.cached(ttl=60)
    def double(x):
        calls.append(x)
        return x * 2

    assert double(2) == 4
    assert double(2) == 4
    assert double(3) == 6
    assert calls == [2, 3]


async def test_bare_decorator_caches_with_the_default_ttl(flavour, raw):
    cache = flavour.cache(default_ttl=30)
    calls = []

    def answer():
        calls.append(1)
        return 42

    fn = cache.cache.cached(native(flavour, answer))
    assert await resolve(flavour, fn()) == 42
    assert await resolve(flavour, fn()) == 42
    assert calls == [1]
    assert 0 < raw.pttl(f"redline:default:1:k:{fn.key_for()}") <= 30_000


MODULE = """
from redline.cache import {cls}

cache = {cls}.memory()


@cache.cached()
{prefix}def price(item_id, currency="EUR", options=None):
    return item_id
"""


async def test_default_key_is_the_same_in_another_process(flavour, tmp_path):
    source = MODULE.format(cls=flavour.cls.__name__, prefix="async " if flavour.is_async else "")
    (tmp_path / "pricing.py").write_text(source)
    call = "pricing.price.key_for(7, options={'b': 1, 'a': [1, 2]})"
    script = f"import pricing; print({call})"
    env = {**os.environ, "PYTHONHASHSEED": "random"}

    keys = {
        subprocess.run(
            [sys.executable, "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for _ in range(2)
    }
    sys.path.insert(0, str(tmp_path))
    try:
        import pricing

        here = pricing.price.key_for(7, "EUR", {"a": [1, 2], "b": 1})
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("pricing", None)

    assert keys == {here}
    assert here.startswith("pricing.price:")


async def test_positional_keyword_and_default_arguments_share_one_key(flavour):
    cache = flavour.cache().cache
    calls = []

    def price(item_id, currency="EUR"):
        calls.append(item_id)
        return item_id

    fn = cache.cached()(native(flavour, price))
    assert fn.key_for(1) == fn.key_for(item_id=1) == fn.key_for(1, "EUR")
    assert fn.key_for(1) != fn.key_for(1, "USD")
    await resolve(flavour, fn(1))
    await resolve(flavour, fn(item_id=1))
    await resolve(flavour, fn(1, currency="EUR"))
    assert calls == [1]


async def test_key_and_tag_templates_are_filled_from_the_arguments(flavour):
    face = flavour.cache()
    calls = []

    def load_user(user_id):
        calls.append(user_id)
        return {"id": user_id}

    fn = face.cache.cached(key="user:{user_id}", tags=["user:{user_id}", "users"])(
        native(flavour, load_user)
    )
    await resolve(flavour, fn(42))
    await resolve(flavour, fn(43))
    assert fn.key_for(42) == "user:42"
    # The template key is the plain cache key: the direct API sees the same entry.
    assert await face.get("user:42") == {"id": 42}

    await face.invalidate_tags("user:42")
    await resolve(flavour, fn(42))
    await resolve(flavour, fn(43))
    assert calls == [42, 43, 42]

    await face.invalidate_tags("users")
    await resolve(flavour, fn(42))
    await resolve(flavour, fn(43))
    assert calls == [42, 43, 42, 42, 43]


async def test_key_and_tags_may_be_callables(flavour):
    face = flavour.cache()
    calls = []

    def total(order):
        calls.append(order["id"])
        return sum(order["lines"])

    fn = face.cache.cached(
        key=lambda order: f"order:{order['id']}", tags=lambda order: [f"shop:{order['shop']}"]
    )(native(flavour, total))
    order = {"id": 5, "shop": "s1", "lines": [1, 2]}
    assert await resolve(flavour, fn(order)) == 3
    assert await face.get("order:5") == 3
    await face.invalidate_tags("shop:s1")
    assert await resolve(flavour, fn(order)) == 3
    assert calls == [5, 5]


async def test_invalidate_drops_only_that_calls_entry(flavour, raw):
    cache = flavour.cache().cache
    calls = []

    def load_user(user_id):
        calls.append(user_id)
        return user_id

    fn = cache.cached(key="user:{user_id}")(native(flavour, load_user))
    await resolve(flavour, fn(1))
    await resolve(flavour, fn(2))

    await resolve(flavour, fn.invalidate(1))

    assert not raw.exists("redline:default:1:k:user:1")
    assert raw.exists("redline:default:1:k:user:2")
    await resolve(flavour, fn(1))
    await resolve(flavour, fn(2))
    assert calls == [1, 2, 1]


async def test_unserializable_argument_raises_cache_key_error_with_guidance(flavour):
    cache = flavour.cache().cache
    calls = []

    def describe(thing):
        calls.append(thing)
        return str(thing)

    fn = cache.cached()(native(flavour, describe))
    with pytest.raises(CacheKeyError, match=r"describe.*pass key='template \{arg\}'"):
        await resolve(flavour, fn(object()))
    assert calls == []


@ASYNC
async def test_cache_refuses_to_wrap_a_plain_function(flavour):
    cache = flavour.cache().cache

    def plain():
        return 1

    with pytest.raises(TypeError, match="Cache.cached cannot wrap .*plain.*SyncCache"):
        cache.cached()(plain)


@SYNC
async def test_sync_cache_refuses_to_wrap_an_async_function(flavour):
    cache = flavour.cache().cache

    async def coroutine():
        return 1

    with pytest.raises(TypeError, match="SyncCache.cached cannot wrap .*coroutine"):
        cache.cached()(coroutine)


async def test_methods_share_entries_across_instances_because_self_is_skipped(flavour):
    cache = flavour.cache().cache
    calls = []

    class Repo:
        def __init__(self, name):
            self.name = name

        def find(self, item_id):
            calls.append((self.name, item_id))
            return item_id

    Repo.find = cache.cached()(native(flavour, Repo.find))

    assert await resolve(flavour, Repo("a").find(1)) == 1
    assert await resolve(flavour, Repo("b").find(1)) == 1
    assert await resolve(flavour, Repo("b").find(2)) == 2
    assert calls == [("a", 1), ("b", 2)]
    key = Repo.find.key_for(Repo("c"), 1)
    assert key == Repo.find.key_for(Repo("d"), item_id=1)
    assert "Repo object" not in key
    assert key.endswith(":[1]")
