#!/usr/bin/env bash
# Home Assistant Core for the real-Home-Assistant test (tests/homeassistant/) and bench/home_assistant.py:
# the version pinned in scripts/home-assistant-requirements.txt, in its own Python 3.13 virtual environment
# OUTSIDE the repository, cached between runs:
#   ${ROOMTONE_HA_VENV:-${XDG_CACHE_HOME:-~/.cache}/roomtone/ha-<version>}
# `scripts/setup.sh --test` runs it (so does `bash scripts/setup-home-assistant.sh`); idempotent (a ready
# environment is checked in a second). It installs
# Home Assistant plus the Python requirements of every integration the test loads (Home Assistant would
# otherwise pip-install them at its first start; the tests run it with --skip-pip, never downloading).
# Home Assistant 2025.4 needs Python >= 3.13.0 (later releases >= 3.13.2): python3.13 on PATH, or pyenv's.
# Four requirements publish no Python 3.13 wheel and are compiled: g++ (scripts/apt-packages-test.txt).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'setup-home-assistant: %s\n' "$*" >&2; }

requirements=scripts/home-assistant-requirements.txt
version="$(sed -n 's/^homeassistant==//p' "$requirements")"
venv="${ROOMTONE_HA_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/roomtone/ha-$version}"
want="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [ "$(cat "$venv/.roomtone-ready" 2>/dev/null)" = "$want" ]; then
    log "ready ($venv, Home Assistant $version)"
    exit 0
fi

# The first Python 3.13 that runs: $HA_PYTHON, python3.13 on PATH (a pyenv shim may exist without
# running), then pyenv's own 3.13 installations, newest first.
python=""
for candidate in ${HA_PYTHON:-} python3.13 \
        $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.13.*/bin/python3.13 2>/dev/null | sort -rV); do
    if "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' 2>/dev/null; then
        python="$(command -v "$candidate")"
        break
    fi
done
if [ -z "$python" ]; then
    log "Python 3.13 is required for Home Assistant $version (set HA_PYTHON, or install it with pyenv)"
    exit 1
fi
log "installing Home Assistant $version with $python into $venv (first run downloads about 400 MB)"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
# --no-compile: Home Assistant compiles what it imports at its first start (a fraction of its files)
pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check --prefer-binary --no-compile)
# Home Assistant alone first, for its package_constraints.txt: without those pins pip backtracks through
# dozens of source releases of its unpinned transitive requirements (bluetooth-data-tools, ...).
"${pip[@]}" --no-deps "homeassistant==$version" 2>&1 | grep -v -e '^WARNING: Location' >&2 || true
constraints="$("$venv/bin/python" -c 'import homeassistant, os; print(os.path.join(os.path.dirname(homeassistant.__file__), "package_constraints.txt"))')"
"${pip[@]}" -r "$requirements" -c "$constraints" 2>&1 | grep -v -e '^WARNING: Location' >&2 || true
"$venv/bin/python" -c 'import homeassistant.const as c, paho.mqtt, hass_frontend; print("Home Assistant", c.__version__)' >&2 \
    || { log "the installation in $venv is incomplete"; exit 1; }
echo "$want" > "$venv/.roomtone-ready"
log "ready ($venv)"
