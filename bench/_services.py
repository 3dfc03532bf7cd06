"""What the benchmarks share: a service of ours in its own process, a token issuer, percentiles."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from oncostruct_shared.devissuer import IssuerSettings, create_app, load_or_create_key, mint_token
from tests.support import LiveServer, free_port, service_process

__all__ = ["Issuer", "issuer", "percentile", "service_process"]


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


@dataclass
class Issuer:
    """A development issuer running in this process."""

    url: str
    settings: IssuerSettings

    def token(self, *scopes: str) -> str:
        key = load_or_create_key(self.settings.key_file)
        return mint_token(key, issuer=self.url, audience="oncostruct", subject="bench", scopes=scopes, ttl_seconds=7200)


@contextmanager
def issuer(folder: Path) -> Iterator[Issuer]:
    """Run the development issuer on a free port for the block."""
    port = free_port()
    settings = IssuerSettings(url=f"http://127.0.0.1:{port}", key_file=folder / "issuer-key.pem")
    with LiveServer(create_app(settings), port=port):
        yield Issuer(settings.url, settings)
