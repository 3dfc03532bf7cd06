"""Fetch step for the npm registry packages the tests use, run by ``make test`` before pytest.

``python -m tests.npm_packages`` runs ``npm pack <name>@<version>`` for each package into
``.local/cache/npm/<name>-<version>/`` and unpacks it there, once:

- ``hl7.fhir.us.mcode@4.0.0`` — the mCODE examples the clinical tests store and read back;
- ``@ohif/app@3.13.2`` — the prebuilt OHIF viewer (``package/dist``) the imaging browser test serves.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".local" / "cache" / "npm"
#: (name, version, a path inside the unpacked ``package`` folder that shows it is complete)
PACKAGES = {
    "mcode": ("hl7.fhir.us.mcode", "4.0.0", "example"),
    "ohif": ("@ohif/app", "3.13.2", "dist/index.html"),
}


def ensure_package(key: str) -> Path:
    """The unpacked package folder (``…/package``) of ``PACKAGES[key]``, fetched with ``npm pack`` if missing."""
    name, version, marker = PACKAGES[key]
    folder = CACHE / f"{name.replace('/', '__')}-{version}"
    package = folder / "package"
    if (package / marker).exists():
        return package
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(f"npm is needed once to fetch {name}@{version} (apt-get install npm)")
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run(
            [npm, "pack", f"{name}@{version}", "--pack-destination", scratch, "--silent"],
            check=True,
            capture_output=True,
            timeout=600,
        )
        tarball = next(Path(scratch).glob("*.tgz"))
        folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="unpack-", dir=folder))
        with tarfile.open(tarball) as archive:
            archive.extractall(staging, filter="data")
        shutil.rmtree(package, ignore_errors=True)
        (staging / "package").rename(package)
        shutil.rmtree(staging, ignore_errors=True)
    return package


if __name__ == "__main__":
    for key in PACKAGES:
        print(ensure_package(key))
    sys.exit(0)
