"""Alembic environment of the annotations service (see oncostruct_shared.db)."""

from oncostruct_shared.db import run_migrations_in_env

run_migrations_in_env()
