"""What the benchmarks share: a service of ours in its own process, a token issuer, percentiles."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from oncostruct_shared.devissuer import IssuerSettings, create_app, load_or_create_key, mint_token
from tests.support import LiveServer, ServiceProcess, free_port, postgres_server, service_process

__all__ = ["Issuer", "Suite", "issuer", "percentile", "service_process", "suite"]


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


@dataclass
class Suite:
    """Services of ours running as separate processes on one PostgreSQL database, as ``make run`` runs them."""

    urls: dict[str, str]
    issuer: Issuer

    def token(self, *scopes: str) -> str:
        """A bearer token with ``scopes``."""
        return self.issuer.token(*scopes)


@contextmanager
def suite(names: tuple[str, ...], folder: Path, settings: dict[str, dict[str, str]] | None = None) -> Iterator[Suite]:
    """Start ``names`` in order (each told the URLs of those before it), with a private PostgreSQL and issuer.

    ``settings`` adds environment settings per service name.
    """
    import secrets

    secret = secrets.token_urlsafe(16)
    with postgres_server() as postgres:
        database = postgres.create_database("bench_suite")
        port = free_port()
        issuer_settings = IssuerSettings(
            url=f"http://127.0.0.1:{port}",
            key_file=folder / "key.pem",
            clients={f"oncostruct-{name}": secret for name in names},
        )
        processes: list[ServiceProcess] = []
        with LiveServer(create_app(issuer_settings), port=port):
            try:
                urls: dict[str, str] = {}
                for name in names:
                    env = {"auth_client_secret": secret, **{f"{peer}_url": url for peer, url in urls.items()}}
                    env |= (settings or {}).get(name, {})
                    service = ServiceProcess(name, database, issuer_settings.url, folder, settings=env).start()
                    processes.append(service)
                    urls[name] = service.url
                yield Suite(urls, Issuer(issuer_settings.url, issuer_settings))
            finally:
                for service in reversed(processes):
                    service.stop()
