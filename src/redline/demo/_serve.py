"""The app process of ``redline demo``: ``python -m redline.demo._serve --port N``.

The settings come as JSON in ``REDLINE_DEMO_SETTINGS`` (written by the runner): the URLs and
the layers of one configuration. The app runs under uvicorn on uvloop and httptools, one
worker, no access log, with metrics on (the runner reads ``/metrics`` before and after each
load run). On SIGTERM uvicorn stops taking requests, the dashboard's event streams are ended
first so that they do not hold the shutdown up, and the lifespan closes the engine and cache.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

SETTINGS_ENV = "REDLINE_DEMO_SETTINGS"


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
        pool_size=int(raw.get("pool_size", 10)),
        max_overflow=int(raw.get("max_overflow", 10)),
        secure_cookies=False,  # plain HTTP on loopback
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()

    import uvicorn

    from redline.demo import create_app

    app = create_app(settings_from_env())

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            if app.state.dashboard is not None:
                app.state.dashboard.close()
            await super().shutdown(sockets)

    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        backlog=4096,
        timeout_keep_alive=60,
    )
    Server(config).run()


if __name__ == "__main__":
    main()
