#!/usr/bin/env bash
# Start Dask workers for Unmixer on this machine (README, "Many machines"), after the set-up
# (setup.sh):   bash scripts/worker.sh tcp://SCHEDULER:8786 --nworkers 4 --memory-limit 4GB
# Extra arguments go to `dask worker`. One thread per worker process (madmom and the engine
# are run one song per process). setup.sh installs Unmixer into .venv (editable), so the
# workers import this checkout.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
export UNMIXER_THREADS=1  # madmom on the calling thread (unmixer.batch.serial_madmom)
export DASK_CONFIG="$root/scripts/dask.yaml"  # Dask's settings for Unmixer (memory allocator)
exec .venv/bin/dask worker --nthreads 1 "$@"
