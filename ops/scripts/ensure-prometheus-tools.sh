#!/usr/bin/env bash
# Make sure `promtool` (Prometheus' rule checker) and `amtool` (Alertmanager's
# configuration checker) are there for the tests of ops/prometheus/ and the
# deployment checks, and the `prometheus` server `make run` starts.
#   PROMTOOL set        -> it must be an executable; nothing is installed.
#   else on PATH        -> used as is.
#   else root + apt     -> Debian's `prometheus` package installed (it ships
#                          promtool), without its recommends, and with no
#                          daemon left running or listening: service starts
#                          are refused during the install (policy-rc.d) and
#                          the unit the package enables is disabled.
#   else                -> exit 1 with exactly what to do.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ -n "${PROMTOOL:-}" ]; then
    if [ -x "$PROMTOOL" ]; then exit 0; fi
    echo "PROMTOOL=$PROMTOOL is not an executable; unset it to use promtool from PATH." >&2
    exit 1
fi
packages=()
command -v promtool >/dev/null 2>&1 || packages+=(prometheus)
command -v amtool >/dev/null 2>&1 || packages+=(prometheus-alertmanager)
if [ "${#packages[@]}" = 0 ]; then exit 0; fi

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    cat >&2 <<'MSG'
promtool or amtool is not installed: the tests check ops/prometheus/ and the
Alertmanager configuration with them. Do one of:
  - sudo ops/scripts/ensure-prometheus-tools.sh
    (installs Debian's `prometheus` package, which ships promtool, and
    leaves no Prometheus server running)
  - sudo apt-get install --no-install-recommends prometheus prometheus-alertmanager
    then, where systemd runs: sudo systemctl disable --now prometheus
  - export PROMTOOL=/path/to/promtool   (any Prometheus 2.x release's)
MSG
    exit 1
fi

# Prometheus' own port: whatever listens there before the install is not ours.
listening_9090() { (exec 3<>/dev/tcp/127.0.0.1/9090) 2>/dev/null; }
was_listening=no
if listening_9090; then was_listening=yes; fi

# Refuse every service start while the package installs (invoke-rc.d and
# deb-systemd-invoke both ask policy-rc.d); put back what was there after.
POLICY=/usr/sbin/policy-rc.d
saved_policy=""
if [ -e "$POLICY" ]; then
    saved_policy=$(mktemp)
    cp -p "$POLICY" "$saved_policy"
fi
restore_policy() {
    if [ -n "$saved_policy" ]; then
        mv -f "$saved_policy" "$POLICY"
    else
        rm -f "$POLICY"
    fi
}
trap restore_policy EXIT
printf '#!/bin/sh\n# ops/scripts/ensure-prometheus-tools.sh: no service starts now.\nexit 101\n' \
    >"$POLICY"
chmod 755 "$POLICY"

echo "==> installing ${packages[*]} (promtool, amtool) with apt-get"
DEBIAN_FRONTEND=noninteractive apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" \
    >/dev/null

restore_policy
trap - EXIT

# Only the tools are wanted: no server at boot, nor one running now.
for unit in prometheus prometheus-alertmanager; do
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        systemctl disable --now "$unit.service" >/dev/null 2>&1 || true
    elif [ -x "/etc/init.d/$unit" ]; then
        "/etc/init.d/$unit" stop >/dev/null 2>&1 || true
    fi
done

for tool in promtool amtool; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "The packages were installed but $tool is not on PATH" \
             "(dpkg -S bin/$tool)." >&2
        exit 1
    fi
done
if [ "$was_listening" = no ] && listening_9090; then
    echo "Something listens on 127.0.0.1:9090 since prometheus was installed;" \
         "stop it: systemctl disable --now prometheus (or /etc/init.d/prometheus stop)." >&2
    exit 1
fi
echo "==> $(promtool --version 2>&1 | head -n 1)"
