"""The command line every service has: ``python -m oncostruct_<service> migrate|serve``."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from .db import Database, current_revision, head_revision
from .logging import configure_logging
from .settings import ServiceSettings


async def _migrate(settings: ServiceSettings, migrations_dir: Path) -> str | None:
    database = Database(settings)
    try:
        await database.migrate(migrations_dir)
        return await current_revision(database.engine, settings.schema_name)
    finally:
        await database.dispose()


def service_main(
    settings_cls: type[ServiceSettings],
    app_factory: str,
    migrations_dir: Path,
    default_port: int,
    argv: list[str] | None,
) -> int:
    """Run the service command line.

    Parameters
    ----------
    settings_cls
        The service's settings class (read from the environment).
    app_factory
        Import path of the app factory, e.g. ``oncostruct_clinical.app:create_app``.
    migrations_dir
        The service's Alembic folder.
    default_port
        The service's local port.
    argv
        Arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(prog=f"python -m oncostruct_{settings_cls.service_name}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply pending database migrations and print the revision")
    sub.add_parser("heads", help="print the newest migration revision shipped with this version")
    serve = sub.add_parser("serve", help="run the service with uvicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=default_port)
    args = parser.parse_args(argv)
    settings = settings_cls()
    if args.command == "migrate":
        configure_logging(settings.service_name, settings.log_level)
        revision = asyncio.run(_migrate(settings, migrations_dir))
        print(f"{settings.service_name}: schema {settings.schema_name} at revision {revision}")
    elif args.command == "heads":
        print(head_revision(migrations_dir))
    else:
        import uvicorn

        uvicorn.run(
            app_factory,
            factory=True,
            host=args.host,
            port=args.port,
            workers=settings.workers,
            access_log=False,
            log_config=None,
        )
    return 0
