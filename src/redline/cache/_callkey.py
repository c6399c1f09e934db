"""Deterministic cache keys and tags for decorated functions.

A key is the function's qualified name plus the values of its bound arguments, defaults
applied, in signature order, as canonical JSON (orjson, dict keys sorted): ``pkg.mod.f:[1,"EUR"]``
for ``f(1)`` and ``f(item_id=1)`` alike. It is the same in every process and across restarts,
unlike ``hash()``. ``self`` and ``cls`` are left out; arguments that JSON cannot encode need an
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
        # Calls passing every parameter positionally skip signature binding, the slow part.
        self.positional = all(
            p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
            for p in self.signature.parameters.values()
        )
        self.arity = len(params)
        self.prefix = self.name + ":"
        self.key = key
        self.key_is_template = isinstance(key, str)
        self.tags = tags
        self.tags_are_callable = callable(tags)
        self.templated_tags = not callable(tags) and any("{" in t for t in tags)

    def __call__(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[str, tuple[str, ...]]:
        key = self.key
        if key is None:
            key = self._default_key(args, kwargs)
        elif self.key_is_template:
            key = key.format(**self._bound(args, kwargs))
        else:
            key = key(*args, **kwargs)
        tags = self.tags
        if self.tags_are_callable:
            tags = tuple(tags(*args, **kwargs))
        elif self.templated_tags:
            bound = self._bound(args, kwargs)
            tags = tuple(tag.format(**bound) for tag in tags)
        return key, tags  # type: ignore[return-value]

    def _default_key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        if self.positional and not kwargs and len(args) == self.arity:
            values = args[1:] if self.skip_first else args
        else:
            values = tuple(self._bound(args, kwargs).values())
        try:
            encoded = orjson.dumps(values, option=_OPTS)
        except TypeError as exc:
            raise CacheKeyError(
                f"cannot build a cache key for {self.name}: {exc}; "
                "pass key='template {arg}' or key=callable to @cached"
            ) from None
        return self.prefix + encoded.decode()

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
