"""Alembic migrations of the reference application; run them with ``redline.demo.upgrade``."""
