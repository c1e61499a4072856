#!/usr/bin/env bash
# Create the virtualenv and install the project with its pinned dependencies.
# Re-installs only when setup.cfg changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
    for candidate in python3.11 "$HOME/.pyenv/versions/3.11"*/bin/python3; do
        if [ -x "$(command -v "$candidate" 2>/dev/null || echo "$candidate")" ] && \
           "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
            PYTHON=$candidate; break
        fi
    done
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
    echo "fintech-services needs Python 3.11 (nameko 2.14 and the pinned set are verified on it)." >&2
    echo "On Debian 12: apt-get install python3.11 python3.11-venv; or set PYTHON=/path/to/python3.11" >&2
    exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating virtualenv $VENV ($("$PYTHON" --version))"
    if ! "$PYTHON" -m venv "$VENV"; then
        echo "python3 -m venv failed: on Debian run 'apt-get install python3.11-venv'" >&2
        exit 1
    fi
fi

stamp="$VENV/.installed-$(sha256sum setup.cfg | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    echo "==> installing fintech-services and its pinned dependencies"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e '.[dev]'
    rm -f "$VENV"/.installed-*
    touch "$stamp"
fi
