#!/usr/bin/env bash
# Creates (or reuses) the project's virtual environment and links it at ./.venv.
#
# The environment is several GB (torch), so it lives in a cache outside the clone, keyed by the hash of
# pyproject.toml's dependency lists: a fresh clone with the same dependencies reuses it in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
# As root, the embedded PostgreSQL runs as an unprivileged user who must reach its binaries inside the venv,
# and root's home is closed to others: keep the cache in /var/cache then.
if [ "$(id -u)" = 0 ]; then default_cache=/var/cache/vlplatform; else default_cache=${XDG_CACHE_HOME:-$HOME/.cache}/vlplatform; fi
CACHE_DIR=${VLP_VENV_CACHE:-$default_cache}
deps=$("$PYTHON" - <<'PY'
import tomllib
with open("pyproject.toml", "rb") as f:
    project = tomllib.load(f)["project"]
print("\n".join(project["dependencies"] + project["optional-dependencies"]["dev"]))
PY
)
key=$(printf '%s\n%s\n' "$("$PYTHON" -c 'import sys; print(sys.version)')" "$deps" | sha256sum | cut -c1-16)
venv="$CACHE_DIR/venv-$key"

if [ ! -f "$venv/.complete" ]; then
    echo "venv: creating $venv (torch and the ML stack: a few minutes on a new machine)"
    rm -rf "$venv"
    mkdir -p "$CACHE_DIR"
    "$PYTHON" -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    # torch first, alone: pip takes these pinned releases from the machine's local wheels.
    echo "$deps" | grep -E '^(torch|torchvision)==' | xargs "$venv/bin/pip" install --quiet
    echo "$deps" | grep -vE '^(torch|torchvision)==' | tr '\n' '\0' | xargs -0 "$venv/bin/pip" install --quiet
    "$venv/bin/pip" check
    touch "$venv/.complete"
fi

if [ "$(readlink .venv 2>/dev/null)" != "$venv" ]; then
    rm -rf .venv
    ln -s "$venv" .venv
fi
