#!/bin/bash
# Run a timing command ahead of other jobs on a shared machine:
#   bench/prio.sh .venv/bin/python bench/engine.py stages
# With the kernel's autogroup scheduling (sched_autogroup_enabled = 1), `nice` only ranks
# processes within one session; other sessions (other shells, background jobs) still get
# an equal share of the cores. This starts the command in a session of its own and gives
# that session's autogroup nice -20 (needs root), so the benchmark gets the cores. On an
# idle machine it changes nothing.
exec setsid bash -c 'echo -20 > /proc/$$/autogroup 2>/dev/null; exec nice -n -15 "$@"' prio "$@"
