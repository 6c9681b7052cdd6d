#!/usr/bin/env bash
# Install what diego and its tests need, on a fresh Debian machine as root.
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
  if [[ ! -f /var/lib/apt/periodic/diego-updated ]]; then
    apt-get update -qq
    mkdir -p /var/lib/apt/periodic && touch /var/lib/apt/periodic/diego-updated
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

missing=()
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || missing+=(python3)
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
command -v git >/dev/null || missing+=(git)
# The store's tests run against a private PostgreSQL cluster as well as SQLite.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
command -v runuser >/dev/null || missing+=(util-linux)
# The local backend: bubblewrap sandboxes; setpriv and prlimit (util-linux),
# mkfs.ext4 (e2fsprogs) and mount for each container's size-limited disk.
command -v bwrap >/dev/null || missing+=(bubblewrap)
command -v setpriv >/dev/null && command -v prlimit >/dev/null || missing+=(util-linux)
command -v mkfs.ext4 >/dev/null || missing+=(e2fsprogs)
command -v mount >/dev/null || missing+=(mount)
# The Snakemake e2e test: Debian's own Python (its image carries it), and ip(8)
# for the network namespace that plays the storage host.
/usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3 python3-venv)
command -v ip >/dev/null || missing+=(iproute2)
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  apt_install "${missing[@]}"
fi

if [[ ! -x .venv/bin/python ]]; then
  python3 -m venv .venv
fi
# Reinstall only when pyproject.toml changed since the last install.
stamp=.venv/.diego-installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[dev]'
  touch "$stamp"
fi

# Snakemake and its TES executor, for tests/e2e/test_tes_snakemake.py, in a venv of
# Debian's Python (the test's image carries both), with a wheelhouse of the S3
# storage plugin at the same versions: each job pip-installs it, offline there.
smk=.venv-snakemake
requirements=tests/e2e/snakemake/requirements.txt
if [[ ! -f $smk/.diego-installed || $requirements -nt $smk/.diego-installed ]]; then
  rm -rf "$smk"
  /usr/bin/python3 -m venv "$smk"
  "$smk/bin/pip" install -q -r "$requirements"
  "$smk/bin/pip" freeze >"$smk/constraints.txt"
  "$smk/bin/pip" download -q -d "$smk/wheels" -c "$smk/constraints.txt" \
    "$(grep -o '^snakemake-storage-plugin-s3==[^ ]*' "$requirements")"
  touch "$smk/.diego-installed"
fi
