"""``python -m oncostruct_imaging migrate|heads|serve``."""

from __future__ import annotations

import sys
from pathlib import Path

from oncostruct_shared.cli import service_main

from .config import Settings


def main(argv: list[str] | None = None) -> int:
    """Run the imaging service's command line."""
    migrations = Path(__file__).parent / "migrations"
    return service_main(Settings, "oncostruct_imaging.app:create_app", migrations, 8082, argv)


if __name__ == "__main__":
    sys.exit(main())
