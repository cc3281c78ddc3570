#!/usr/bin/env bash
# `make bench` set-up: what the benchmark needs beyond `make venv` / `make services`.
#
#   bash bench/setup.sh [VENV]
#
# - pt-archiver (Debian's percona-toolkit) and pgbench (PostgreSQL's client tools; the server
#   packages `make services` installs ship it under /usr/lib/postgresql/*/bin) via apt-get, as
#   root or through passwordless sudo; otherwise it prints the one command to run and exits 1
#   (as scripts/bootstrap.sh does);
# - reladiff from PyPI in its OWN virtualenv, .local/bench/reladiff-venv (postgresql and mysql
#   extras), so its pins never touch the project's;
# - bench/requirements.txt (matplotlib) into the project venv.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
APT_GET=${ZDT_APT_GET:-apt-get}
RELADIFF_VENV=.local/bench/reladiff-venv
say() { echo "==> $*"; }

install_packages() {
  local pkgs=("$@")
  [ ${#pkgs[@]} -gt 0 ] || return 0
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; else
      echo "error: the benchmark needs system packages and there is no root or passwordless sudo. Run:" >&2
      echo "  sudo apt-get update && sudo apt-get install -y ${pkgs[*]}" >&2
      exit 1
    fi
  fi
  if ! command -v "${APT_GET%% *}" >/dev/null 2>&1 || [ ! -r /etc/debian_version ]; then
    echo "error: missing ${pkgs[*]}; this is not a Debian/Ubuntu machine: install their equivalents" >&2
    exit 1
  fi
  say "installing system packages: ${pkgs[*]}"
  $sudo env DEBIAN_FRONTEND=noninteractive $APT_GET update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive $APT_GET install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
}

have_pgbench() {
  command -v pgbench >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/pgbench" >/dev/null
}

missing=()
command -v pt-archiver >/dev/null 2>&1 || missing+=(percona-toolkit)
have_pgbench || missing+=(postgresql-client-15)
install_packages "${missing[@]}"

if [ ! -x "$RELADIFF_VENV/bin/reladiff" ]; then
  say "installing reladiff[postgresql,mysql] into $RELADIFF_VENV"
  mkdir -p "$(dirname "$RELADIFF_VENV")"
  python3 -m venv "$RELADIFF_VENV"
  "$RELADIFF_VENV/bin/pip" install -q --disable-pip-version-check "reladiff[postgresql,mysql]"
fi

if ! "$VENV/bin/python" -c "import matplotlib" 2>/dev/null; then
  say "installing bench/requirements.txt into $VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r bench/requirements.txt
fi
say "bench tools ready: $(command -v pt-archiver), reladiff $("$RELADIFF_VENV/bin/reladiff" --version 2>/dev/null | head -1)"
