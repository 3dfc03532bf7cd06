"""Fetch step for the mCODE 4.0.0 examples the clinical tests store and read back.

``python -m tests.clinical.mcode_package`` runs ``npm pack hl7.fhir.us.mcode@4.0.0``
into ``.local/cache/fhir/`` and unpacks it there, once; the tests read the
examples from ``.local/cache/fhir/hl7.fhir.us.mcode-4.0.0/package/example/``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "hl7.fhir.us.mcode"
VERSION = "4.0.0"
ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".local" / "cache" / "fhir" / f"{PACKAGE}-{VERSION}"


def ensure_mcode_package() -> Path:
    """The unpacked package folder (``…/package``), fetched with ``npm pack`` if missing."""
    package = CACHE / "package"
    if (package / "example").is_dir():
        return package
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is needed once to fetch the mCODE examples (apt-get install npm)")
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run(
            [npm, "pack", f"{PACKAGE}@{VERSION}", "--pack-destination", scratch, "--silent"],
            check=True,
            capture_output=True,
            timeout=300,
        )
        tarball = next(Path(scratch).glob("*.tgz"))
        CACHE.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="mcode-", dir=CACHE))
        with tarfile.open(tarball) as archive:
            archive.extractall(staging, filter="data")
        shutil.rmtree(package, ignore_errors=True)
        (staging / "package").rename(package)
        shutil.rmtree(staging, ignore_errors=True)
    return package


if __name__ == "__main__":
    print(ensure_mcode_package())
    sys.exit(0)
