#!/usr/bin/env bash
# Set up (see setup.sh), then run the Streamlit app. Extra arguments go to `streamlit run`,
# e.g. `UNMIXER_PASSWORD=... bash scripts/app.sh --server.address 0.0.0.0` to share it on the
# local network behind a password.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
if [[ " $* " =~ --server\.address[=\ ]+(0\.0\.0\.0|::) ]] && [ -z "${UNMIXER_PASSWORD:-}" ] \
    && ! grep -qs '^UNMIXER_PASSWORD' .streamlit/secrets.toml; then
  echo "app: shared on every address without a password: anyone on this network can use it." >&2
  echo "app: set UNMIXER_PASSWORD to ask for one (README: Share it on your local network)." >&2
fi
exec .venv/bin/python -m streamlit run streamlit_app.py "$@"
