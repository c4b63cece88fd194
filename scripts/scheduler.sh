#!/usr/bin/env bash
# Start a Dask scheduler for Unmixer's batch and app (README, "Many machines"), after the
# set-up (setup.sh: the scheduler unpickles Unmixer's tasks, so it needs Unmixer installed).
# Extra arguments go to `dask scheduler` (e.g. --port 8786).
# Dask's settings for Unmixer: scripts/dask.yaml (a song whose worker dies is run once more,
# then listed as an error; a worker holds only the songs it runs).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
export DASK_CONFIG="$root/scripts/dask.yaml"
exec .venv/bin/dask scheduler "$@"
