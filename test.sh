#!/usr/bin/env bash
# The README's test command: installs every part the tests need (idempotently, loudly),
# then runs them. `.ci/run` calls this same script. Arguments go to `cargo test`.
#
# Each part is checked after its install: a part that is still missing stops the script
# here, with its name, instead of failing (or worse, skipping) a test later.
set -euo pipefail
cd "$(dirname "$0")"

say() { printf '%s\n' "test.sh: $*" >&2; }
die() { say "$*"; exit 1; }

# Debian packages, with sudo when not root; an `apt-get update` only when the first try fails.
apt_install() {
  local sudo=()
  if [ "$(id -u)" != 0 ]; then sudo=(sudo); fi
  say "installing $* (apt-get)"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1 \
    || { "${sudo[@]}" apt-get update >/dev/null && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"; } \
    || die "could not install $* with apt-get"
}

# Python packages for the user running the tests.
pip_install() {
  say "installing $* (pip)"
  python3 -m pip install --quiet --disable-pip-version-check "$@" || die "could not install $* with pip"
  # pyenv only sees a new script after a rehash.
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
}

command -v git >/dev/null || apt_install git
command -v python3 >/dev/null || apt_install python3 python3-pip python3-venv

# Real pytest for the delivery tests; jsonschema checks `pydeployer schema`.
python3 -m pytest --version >/dev/null 2>&1 || pip_install 'pytest==8.3.3'
python3 -c 'import jsonschema' >/dev/null 2>&1 || pip_install 'jsonschema>=4.18,<5'
# Graphviz renders `graph --format dot`, man reads `pydeployer man`, strace injects faults.
command -v dot >/dev/null 2>&1 || apt_install graphviz
command -v man >/dev/null 2>&1 || apt_install man-db
command -v strace >/dev/null 2>&1 || apt_install strace

command -v pytest >/dev/null || die "pytest is not on PATH after installing it"
python3 -c 'import jsonschema' || die "python3 cannot import jsonschema after installing it"
command -v dot >/dev/null || die "Graphviz's dot is not on PATH after installing graphviz"
command -v man >/dev/null || die "man is not on PATH after installing man-db"
command -v strace >/dev/null || die "strace is not on PATH after installing strace"
say "parts: $(git --version), pytest $(python3 -m pytest --version 2>&1 | awk '{print $2}'), $(dot -V 2>&1)"

cargo test --locked "$@"
