"""The reference application: capital calls and workflow automation on FastAPI, PostgreSQL
(SQLAlchemy 2 async, asyncpg) and Redis, wired with redline's public API only.

It exists to be measured: ``redline demo`` runs it layer by layer (indexes, materialized view,
L1 cache, Redis, HTTP caching) and shows what each buys. It is also a worked example of how
to wire redline into a service: cache-aside with tags on every read path, invalidation on
every write path, user-scoped keys for private data, metrics and the dashboard mounted.

Quick use::

    from redline.demo import Settings, create_app, seed, upgrade

    upgrade(dsn)                      # all migrations; or upgrade(dsn, "baseline")
    seed(dsn, scale=1, progress=True) # deterministic data, loaded with COPY
    app = create_app(Settings(dsn=dsn, cache="l1+l2", redis_url=redis_url, metrics=True))
    # uvicorn.run(app)
"""

from redline.demo._app import create_app
from redline.demo._auth import hash_password, verify_password
from redline.demo._caching import (
    NoCache,
    build_cache,
    invalidate_capital_call,
    invalidate_dashboard,
    invalidate_user,
    invalidate_workflow,
    invalidate_workflow_runs,
)
from redline.demo._errors import DemoConfigError, DemoError, SchemaError
from redline.demo._migrate import (
    BASELINE,
    DASHBOARD_VIEW,
    INDEXES,
    REVISIONS,
    current_revision,
    downgrade,
    upgrade,
)
from redline.demo._refresher import DashboardRefresher, refresh_dashboard
from redline.demo._seed import (
    DEMO_PASSWORD,
    REFERENCE_TIME,
    SeedCounts,
    aseed,
    generate,
    scaled_counts,
    seed,
)
from redline.demo._settings import CACHE_MODES, DASHBOARD_SOURCES, Settings

__all__ = [
    "BASELINE",
    "CACHE_MODES",
    "DASHBOARD_SOURCES",
    "DASHBOARD_VIEW",
    "DEMO_PASSWORD",
    "INDEXES",
    "REFERENCE_TIME",
    "REVISIONS",
    "DashboardRefresher",
    "DemoConfigError",
    "DemoError",
    "NoCache",
    "SchemaError",
    "SeedCounts",
    "Settings",
    "aseed",
    "build_cache",
    "create_app",
    "current_revision",
    "downgrade",
    "generate",
    "hash_password",
    "invalidate_capital_call",
    "invalidate_dashboard",
    "invalidate_user",
    "invalidate_workflow",
    "invalidate_workflow_runs",
    "refresh_dashboard",
    "scaled_counts",
    "seed",
    "upgrade",
    "verify_password",
]
