#!/usr/bin/env bash
# Install every Debian package the tests, the demo and the benchmarks use. Idempotent: runs
# `apt-get update` and `apt-get install` only when something is missing. Noninteractive.
# Services that Debian would start on install (nginx, redis, memcached) are kept from starting:
# our tests run their own instances, with their own configs, on their own ports.
set -euo pipefail

PKGS=(nginx-light wrk curl python3 redis-server redis-tools memcached sockperf iproute2 util-linux
    gcc libc6-dev binutils
    # user-stack tests: loss made by nftables (49-user-stack-diff, bench-engines)
    nftables
    procps coreutils
    # benchmarks: syscall counts (perf stat -e raw_syscalls:sys_enter)
    linux-perf
    # user-space TCP backend: DPDK bindings (dpdk-sys, pkg-config) and the veth fixture's tools
    libdpdk-dev pkg-config iputils-ping arping ethtool
    # user-space TCP backend: AF_XDP device (xdp-sys: libxdp's xsk API and default XDP program)
    libxdp-dev libbpf-dev
    # user-space TCP backend: the lwIP engine (lwip-sys, nic-agent feature `lwip`; Debian's
    # lwIP 2.1.3 as packaged, docs/engines.md)
    liblwip-dev
    # operations tests: `snstack top` in a real terminal, `systemd-analyze verify` of the unit
    tmux systemd
    # payload API tests: ab against snstack-http (86-payload-http)
    apache2-utils
    # benchmarks: the engines comparison's plots (ci/bench-engines.sh, issue 14)
    python3-matplotlib
    # kTLS tests: records opened independently of the agent (89-ktls-tx, 98-ktls-rx)
    python3-cryptography)
SERVICES=(nginx redis-server memcached)

installed() { [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) == installed ]]; }

missing=()
for p in "${PKGS[@]}"; do
    case $p in
    # Any Debian nginx flavour will do.
    nginx-light) installed nginx-light || installed nginx || installed nginx-full ||
        installed nginx-core || missing+=("$p") ;;
    *) installed "$p" || missing+=("$p") ;;
    esac
done
# setpriv moved to its own package after bookworm; runuser is in util-linux.
command -v setpriv >/dev/null 2>&1 || ! apt-cache show setpriv >/dev/null 2>&1 || missing+=(setpriv)

if ((${#missing[@]} == 0)); then
    echo "install-deps: all packages present"
    exit 0
fi

SUDO=()
if [[ $(id -u) != 0 ]]; then
    command -v sudo >/dev/null 2>&1 || { echo "install-deps: need root to install: ${missing[*]}" >&2; exit 1; }
    SUDO=(sudo -n)
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive

# policy-rc.d returning 101 tells invoke-rc.d "do not start services" during the install.
# Put it in place only if there is none, and remove only the one we created.
POLICY=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e $POLICY ]]; then
    printf '#!/bin/sh\n# snstack ci/install-deps.sh: no service starts during install\nexit 101\n' |
        "${SUDO[@]}" tee "$POLICY" >/dev/null
    "${SUDO[@]}" chmod 0755 "$POLICY"
    created_policy=1
fi
cleanup() { if ((created_policy)); then "${SUDO[@]}" rm -f "$POLICY"; fi; }
trap cleanup EXIT

"${SUDO[@]}" apt-get update -qq </dev/null
# nginx-light is a Debian 12 package; fall back to nginx where it does not exist.
if ! "${SUDO[@]}" apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}" </dev/null; then
    alt=("${missing[@]/#nginx-light/nginx}")
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${alt[@]}" </dev/null
fi

# Belt and braces: if an init system started or enabled a service anyway, stop and disable it.
for svc in "${SERVICES[@]}"; do
    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
        if systemctl list-unit-files "$svc.service" >/dev/null 2>&1; then
            "${SUDO[@]}" systemctl disable --now "$svc" >/dev/null 2>&1 || true
        fi
    elif [[ -x /etc/init.d/$svc ]]; then
        if "${SUDO[@]}" /etc/init.d/"$svc" status >/dev/null 2>&1; then
            "${SUDO[@]}" /etc/init.d/"$svc" stop >/dev/null 2>&1 || true
        fi
        if command -v update-rc.d >/dev/null 2>&1; then "${SUDO[@]}" update-rc.d "$svc" disable >/dev/null 2>&1 || true; fi
    fi
done
echo "install-deps: done"
