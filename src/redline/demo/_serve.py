"""The app process of ``redline demo``: ``python -m redline.demo._serve --port N [--workers W]``.

The settings come as JSON in ``REDLINE_DEMO_SETTINGS`` (written by the runner): the URLs and
the layers of one configuration. The app runs under uvicorn on uvloop and httptools, no
access log, with metrics on (the runner reads ``/metrics`` before and after each load run).

One worker runs in this process: on SIGTERM uvicorn stops taking requests, the dashboard's
event streams are ended first so that they do not hold the shutdown up, and the lifespan
closes the engine and cache. Several workers (``--workers``, one per core) are uvicorn's
supervisor over spawned processes sharing the listening socket, each building the app from
the same settings (``app_from_env``); they share the L2 cache and the metrics directory the
settings name, so ``/metrics`` in any of them counts them all.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

SETTINGS_ENV = "REDLINE_DEMO_SETTINGS"
_OPTIONAL = ("pool_size", "max_overflow", "cache_ttl", "search_lag", "metrics_dir")


def settings_from_env() -> Any:
    from redline.demo import Settings

    raw = json.loads(os.environ[SETTINGS_ENV])
    return Settings(
        dsn=raw["database_url"],
        redis_url=raw.get("redis_url"),
        cache=raw.get("cache", "none"),
        dashboard_source=raw.get("dashboard_source", "live"),
        http_cache=bool(raw.get("http_cache", False)),
        metrics=True,
        secure_cookies=False,  # plain HTTP on loopback
        **{name: raw[name] for name in _OPTIONAL if raw.get(name) is not None},
    )


def app_from_env() -> Any:
    """The app of one worker process (uvicorn's ``factory``)."""
    from redline.demo import create_app

    return create_app(settings_from_env())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    import uvicorn

    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "loop": "uvloop",
        "http": "httptools",
        "log_level": "warning",
        "access_log": False,
        "backlog": 4096,
        "timeout_keep_alive": 60,
        "proxy_headers": False,  # loopback, no proxy in front: no X-Forwarded-* to trust
    }
    if args.workers > 1:
        # Open dashboard streams are cut after this on shutdown: the supervisor's workers
        # run uvicorn's own Server, which does not close them first.
        uvicorn.run(
            "redline.demo._serve:app_from_env",
            factory=True,
            workers=args.workers,
            timeout_graceful_shutdown=5,
            **options,
        )
        return

    app = app_from_env()

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            if app.state.dashboard is not None:
                app.state.dashboard.close()
            await super().shutdown(sockets)

    Server(uvicorn.Config(app, **options)).run()


if __name__ == "__main__":
    main()
