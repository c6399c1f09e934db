"""Deterministic cache keys and tags for decorated functions.

A key is the function's qualified name plus its bound arguments encoded as canonical JSON
(orjson, sorted keys), so it is the same in every process and across restarts, unlike
``hash()``. ``self`` and ``cls`` are left out; other arguments that JSON cannot encode need an
explicit ``key=`` template or callable.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from redline.cache._exceptions import CacheKeyError

_OPTS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


class CallKey:
    """Builds (key, tags) for one call of ``fn``."""

    def __init__(
        self,
        fn: Callable[..., Any],
        key: str | Callable[..., str] | None,
        tags: Iterable[str] | Callable[..., Iterable[str]],
    ) -> None:
        self.fn = fn
        self.name = f"{fn.__module__}.{fn.__qualname__}"
        self.signature = inspect.signature(fn)
        params = list(self.signature.parameters)
        self.skip_first = bool(params) and params[0] in ("self", "cls")
        plain = all(
            p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
            for p in self.signature.parameters.values()
        )
        # Calls passing every parameter positionally can skip signature binding, the slow part.
        self.names = tuple(params) if plain and not self.skip_first else None
        self.key = key
        self.tags = tags
        self.templated_tags = not callable(tags) and any("{" in t for t in tags)

    def __call__(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[str, tuple[str, ...]]:
        key = self.key
        if key is None:
            key = self._default_key(args, kwargs)
        elif callable(key):
            key = key(*args, **kwargs)
        else:
            key = key.format(**self._bound(args, kwargs))
        tags = self.tags
        if callable(tags):
            tags = tuple(tags(*args, **kwargs))
        elif self.templated_tags:
            bound = self._bound(args, kwargs)
            tags = tuple(tag.format(**bound) for tag in tags)
        return key, tags  # type: ignore[return-value]

    def _default_key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        names = self.names
        if names is not None and not kwargs and len(args) == len(names):
            bound = dict(zip(names, args, strict=True))
        else:
            bound = self._bound(args, kwargs)
        try:
            encoded = orjson.dumps(bound, option=_OPTS).decode()
        except TypeError as exc:
            raise CacheKeyError(
                f"cannot build a cache key for {self.name}: {exc}; "
                "pass key='template {arg}' or key=callable to @cached"
            ) from None
        return self.name + ":" + encoded

    def _bound(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.name}(): {exc}") from None
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        if self.skip_first:
            arguments.pop(next(iter(self.signature.parameters)))
        return arguments
