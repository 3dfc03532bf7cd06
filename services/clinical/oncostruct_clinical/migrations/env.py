"""Alembic environment of the clinical service (see oncostruct_shared.db)."""

from oncostruct_shared.db import run_migrations_in_env

run_migrations_in_env()
