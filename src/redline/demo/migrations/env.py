"""Alembic environment: runs on the connection ``redline.demo.upgrade`` hands over.

No ``alembic.ini`` and no URL in the package: the caller's DSN arrives through
``config.attributes["connection"]``. Each revision runs in its own transaction, so a
revision that builds indexes CONCURRENTLY can step out of it (``autocommit_block``) while
the others stay atomic.
"""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=None,
    transaction_per_migration=True,
    version_table="redline_demo_version",
)
with context.begin_transaction():
    context.run_migrations()
