#!/usr/bin/env bash
# Set up (see setup.sh), then run the Streamlit app. Extra arguments go to `streamlit run`,
# e.g. `bash scripts/app.sh --server.address 0.0.0.0` to share it on the local network.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
exec .venv/bin/python -m streamlit run streamlit_app.py "$@"
