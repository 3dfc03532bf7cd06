#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages OncoStruct needs, only those missing.
# Used by `make run` and `make test` (`--bench`: also what `make bench` needs); needs root or sudo only when something is missing.
set -euo pipefail

missing=()
have_initdb() { compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null; }
have_initdb || missing+=(postgresql)
command -v psql >/dev/null || missing+=(postgresql-client)
python3 -c "import ensurepip, venv" 2>/dev/null || missing+=(python3-venv)
command -v ps >/dev/null || missing+=(procps)
command -v dciodvfy >/dev/null || missing+=(dicom3tools)   # validates the SEG/SR the annotation service writes
command -v Orthanc >/dev/null || missing+=(orthanc)        # the reference PACS peer of the imaging tests
[ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || missing+=(orthanc-dicomweb)
command -v chromium >/dev/null || missing+=(chromium)     # the browser the OHIF viewer test drives (headless)
command -v npm >/dev/null || missing+=(npm)               # fetches the npm packages the tests use (mCODE, OHIF)
if [ "${1:-}" = "--bench" ]; then
  command -v wrk >/dev/null || missing+=(wrk)              # the HTTP load generator of `make bench`
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "Missing system packages: ${missing[*]}. Install them with your package manager." >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "Need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "Installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian's postgresql package starts a system cluster on 5432; we run our own on another port and leave it be.
