#!/usr/bin/env bash
# Idempotent set-up for Debian 12 (run as root, no stdin needed): installs the Debian packages, creates
# .venv and installs roomtone with exactly pinned dependencies in ONE pip command. A second run on a
# ready machine only checks and takes a few seconds.
#   scripts/setup.sh          what the daemon needs (scripts/apt-packages.txt; used by run.sh and the image)
#   scripts/setup.sh --test   that plus what the tests need (scripts/apt-packages-test.txt, the test extras,
#                             and Home Assistant for tests/homeassistant: scripts/setup-home-assistant.sh)
#   scripts/setup.sh --serve  only what the daemon needs to serve (no torch: deploy/Dockerfile, docs/deploy.md)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'setup: %s\n' "$*" >&2; }

mode=run
case "${1:-}" in
    "") ;;
    --test) mode=test ;;
    --serve) mode=serve ;;
    *) log "usage: scripts/setup.sh [--test|--serve]"; exit 2 ;;
esac
# pip extras of each mode (pyproject.toml [project.optional-dependencies]); test is a superset of run, run
# of serve (the train extra: torch and the offline tools, which the README's commands install too).
extras_serve=""
extras_run="train"
extras_test="train,test"
lists=(scripts/apt-packages.txt)
if [ "$mode" = test ]; then lists+=(scripts/apt-packages-test.txt); fi

# 1. Debian packages (only the missing ones; apt-get update only when something is missing).
mapfile -t packages < <(cat "${lists[@]}" | grep -v -e '^#' -e '^[[:space:]]*$')
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { log "need root (or sudo) to install: ${missing[*]}"; exit 1; }
        SUDO="sudo -n"
    fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq </dev/null
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
fi

# 2. Python virtual environment with pinned requirements.
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
    || { log "Python 3.11 is required, $PYTHON is $("$PYTHON" --version 2>&1)"; exit 1; }
if [ ! -x .venv/bin/python ]; then
    log "creating .venv with $PYTHON"
    "$PYTHON" -m venv .venv
fi
extras="extras_$mode"
extras="${!extras}"
spec="."
[ -n "$extras" ] && spec=".[$extras]"
want="$(cat pyproject.toml requirements.lock | sha256sum | cut -d' ' -f1)"
stamp=".venv/.roomtone-installed-$mode"
# A test install (a superset) also satisfies the run mode.
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] && [ "$(cat .venv/.roomtone-installed-test 2>/dev/null)" != "$want" ]; then
    log "installing Python requirements into .venv (first run downloads about 3 GB)"
    # ONE pip command: torch 2.11 and grpcio-tools must be resolved together (setuptools < 82).
    .venv/bin/python -m pip install -q --disable-pip-version-check -c requirements.lock -e "$spec" 2>&1 \
        | grep -v -e '^WARNING: Location' >&2 || true
    check="import onnxruntime, soundfile, sounddevice, grpc, encoder, service"
    [ "$mode" = serve ] || check="$check, torch, torchaudio"
    .venv/bin/python -c "$check" \
        || { log "installation is incomplete"; exit 1; }
    echo "$want" > "$stamp"
    if [ "$mode" = test ]; then echo "$want" > .venv/.roomtone-installed-run; fi
fi
# 3. Home Assistant Core in its own Python 3.13 environment outside the repository (cached; a second run checks a
# stamp). Under CI=true a failure fails the set-up, so the real-Home-Assistant test never skips there; in a
# user's clone (no Python 3.13, say) the set-up goes on and that test skips, naming the reason.
if [ "$mode" = test ]; then
    if ! bash scripts/setup-home-assistant.sh; then
        [ "${CI:-}" = true ] && { log "Home Assistant could not be installed (CI=true requires it)"; exit 1; }
        log "Home Assistant is not installed: tests/homeassistant will skip (see the messages above)"
    fi
fi
log "ready (.venv, $(.venv/bin/python -c 'import importlib.metadata as m
try: print("torch", m.version("torch"))
except m.PackageNotFoundError: print("serving only, no torch")'))"
