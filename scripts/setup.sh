#!/usr/bin/env bash
# Installs everything Unmixer needs on a fresh Debian machine, and is quick when all is there:
#   1. the system packages listed in packages.txt (apt-get, only those missing);
#   2. requirements.txt into .venv/ in the repo root, then this package in editable mode
#      (only when requirements.txt or pyproject.toml changed);
#   3. numba's on-disk cache, compiled once in one process (scripts/precompile.py says why),
#      again when the packages or the compiled code change.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

missing=()
while read -r pkg; do
  pkg="${pkg%%#*}"; pkg="$(echo "$pkg" | xargs)"
  [ -z "$pkg" ] && continue
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done < packages.txt
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing system packages: ${missing[*]}"
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

stamp=".venv/.requirements.sha256"
want="$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
fi
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing requirements.txt into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt
  # the library itself, editable: `import unmixer` from any script, notebook or worker
  .venv/bin/python -m pip install -q --no-deps -e .
  echo "$want" > "$stamp"
fi

warm=".venv/.numba-cache.sha256"
want_warm="$(cat requirements.txt pyproject.toml scripts/precompile.py unmixer/loops/beats.py | sha256sum | cut -d' ' -f1)"
if [ ! -f "$warm" ] || [ "$(cat "$warm")" != "$want_warm" ]; then
  echo "setup: compiling numba's cache"
  if OPENBLAS_NUM_THREADS=1 .venv/bin/python scripts/precompile.py; then
    echo "$want_warm" > "$warm"
  else
    echo "setup: precompiling numba's cache failed; the first analyses will compile it" >&2
  fi
fi
