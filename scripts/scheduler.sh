#!/usr/bin/env bash
# Start a Dask scheduler for Unmixer's batch and app (README, "Many machines"), after the
# set-up (setup.sh). Extra arguments go to `dask scheduler` (e.g. --port 8786).
# A song whose worker dies is run once more, then listed as an error (allowed-failures 1),
# and each worker takes one song per thread at a time (worker-saturation 1), so a worker
# that dies takes only its own songs with it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"  # it unpickles Unmixer's tasks
export DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES="${DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES:-1}"
export DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION="${DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION:-1.0}"
exec .venv/bin/dask scheduler "$@"
