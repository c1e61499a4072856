#!/usr/bin/env bash
# Make sure headless Chromium is there for the browser test of the API
# explorer at /docs (tests/e2e/test_api_explorer.py).
#   CHROMIUM set        -> it must be an executable; nothing is installed.
#   else on PATH        -> `chromium` used as is.
#   else root + apt     -> Debian's `chromium` package installed, without its
#                          recommends.
#   else                -> exit 1 with exactly what to do; the browser test
#                          then skips with the same advice (test.sh goes on).
set -euo pipefail

if [ -n "${CHROMIUM:-}" ]; then
    if [ -x "$CHROMIUM" ]; then exit 0; fi
    echo "CHROMIUM=$CHROMIUM is not an executable; unset it to use chromium from PATH." >&2
    exit 1
fi
if command -v chromium >/dev/null 2>&1; then exit 0; fi

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    cat >&2 <<'MSG'
chromium is not installed: the browser test of /docs (tests/e2e/test_api_explorer.py)
will be skipped. To run it, do one of:
  - sudo ops/scripts/ensure-chromium.sh
  - sudo apt-get install --no-install-recommends chromium
  - export CHROMIUM=/path/to/chromium   (any Chromium or Chrome that runs headless)
MSG
    exit 1
fi

echo "==> installing chromium (for the browser test of /docs) with apt-get"
DEBIAN_FRONTEND=noninteractive apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
echo "==> $(chromium --version 2>/dev/null | head -n 1)"
