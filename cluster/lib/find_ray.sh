# Sourced by cluster/start_local.sh and stop_local.sh: sets ray_bin to the project's Ray
# (.venv/bin/ray when present, else the one on PATH), or exits with a hint.
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
if [[ -x "$repo/.venv/bin/ray" ]]; then
    ray_bin="$repo/.venv/bin/ray"
elif ray_bin="$(command -v ray)"; then
    :
else
    echo "error: no ray: run 'make setup' (creates .venv) or install the project" >&2
    exit 1
fi
