#!/usr/bin/env bash
# Installs what natns needs on Debian 12, idempotently and quietly when it is
# already there: the Debian packages of the tools natns drives, then a venv in
# .venv with natns (editable) and its Python dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."

# openvswitch-switch, ovn-central, ovn-host: the OVN engine (docs/ovn.md). natns runs
# their daemons itself, inside lab namespaces, never the packages' services. On a host
# with systemd as PID 1, installing them would start ovsdb-server/ovs-vswitchd/ovn-northd/
# ovn-controller *in the host*. natns runs them only inside its own namespaces, so the
# install below keeps them from starting: their units are masked first (systemd), and a
# policy-rc.d that refuses service starts is in place while apt runs (sysvinit; left
# alone if the machine already has one). ethtool: TX checksum offload off on OVS's veths.
PKGS=(iproute2 nftables iptables tcpdump conntrack iputils-ping iperf3 graphviz util-linux python3-venv
      openvswitch-switch ovn-central ovn-host ethtool)
# containernetworking-plugins: the CNI bridge/host-local/portmap/firewall plugins the corpus
# of foreign setups runs through their own protocol (tests/integration/corpus, docs/explain.md).
PKGS+=(containernetworking-plugins)

missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "natns: missing Debian packages (${missing[*]}); run as root to install them" >&2
        exit 2
    fi
    echo "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if [ -d /run/systemd/system ]; then
        systemctl mask -q openvswitch-switch.service ovs-vswitchd.service ovsdb-server.service \
            ovn-central.service ovn-northd.service ovn-ovsdb-server-nb.service \
            ovn-ovsdb-server-sb.service ovn-host.service ovn-controller.service 2>/dev/null || true
    fi
    made_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\n# natns bootstrap: no service starts while packages install\nexit 101\n' \
            > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if [ -n "$made_policy" ]; then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
fi

# The venv is built with Debian's interpreter, the one python3-venv above is for
# (a python3 found first on PATH may be a build under a user's home, e.g. pyenv under
# /root, that other users can't run). PYTHON=/path/to/python3 chooses another.
PY=${PYTHON:-/usr/bin/python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    version=$("$PY" -V 2>/dev/null) || version="not a Python this user can run"
    echo "natns: needs Python 3.11 or newer; $PY is $version (set PYTHON=/path/to/python3)" >&2
    exit 2
fi
stamp=.venv/.natns-installed
if [ -e .venv ] && ! .venv/bin/python -c '' 2>/dev/null; then
    echo "natns: .venv's interpreter cannot run here; making it again with $PY"
    rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "installing natns and its Python dependencies into .venv"
    .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,bench]'
    touch "$stamp"
fi
