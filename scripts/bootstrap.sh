#!/usr/bin/env bash
# The one set-up script behind `make venv`, `make demo`, `make test` and `.ci/run`.
#
#   bash scripts/bootstrap.sh venv     [PYTHON] [VENV]   build deps, then .venv with the project installed (editable)
#   bash scripts/bootstrap.sh build-deps [PYTHON] [VENV] only the system packages mysqlclient and the venv need
#   bash scripts/bootstrap.sh services                  database server binaries for the tests; Redis (and MariaDB
#                                                       for `make demo-mysql`) started when not answering; MySQL 9.7
#   bash scripts/bootstrap.sh mysql                     Oracle MySQL 9.7 unpacked into .local/mysql/root (cached)
#
# A fresh machine needs only Python 3.11+ and make. What else is missing is installed here:
# on Debian/Ubuntu with apt-get as root, or through passwordless sudo. Anywhere else, or
# without root, the script prints the one command to run and stops (exit 1).
#
# ZDT_APT_GET names the apt-get to run (tests point it at a recorder); PKG_CONFIG_LIBDIR is
# honoured as pkg-config does, so a test can hide installed headers.
set -euo pipefail
cd "$(dirname "$0")/.."

step=${1:-venv}
PYTHON=${2:-python3}
VENV=${3:-.venv}
APT_GET=${ZDT_APT_GET:-apt-get}

say() { echo "==> $*"; }

# ----------------------------------------------------------------- system packages
# install_packages PKG... : apt-get as root or with passwordless sudo, else print the command and exit 1.
install_packages() {
  local pkgs=("$@")
  [ ${#pkgs[@]} -gt 0 ] || return 0
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo="sudo -n"
    else
      sudo="sudo"
    fi
  fi
  if ! command -v "${APT_GET%% *}" >/dev/null 2>&1 || [ ! -r /etc/debian_version ]; then
    echo "error: missing system packages: ${pkgs[*]}" >&2
    echo "  this is not a Debian/Ubuntu machine; install their equivalents, for example on macOS:" >&2
    echo "  brew install pkg-config mysql-client mariadb postgresql@15 redis" >&2
    exit 1
  fi
  if [ "$sudo" = "sudo" ]; then
    echo "error: missing system packages, and no root or passwordless sudo to install them. Run:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y ${pkgs[*]}" >&2
    exit 1
  fi
  say "installing system packages: ${pkgs[*]}"
  # Through env: sudo resets the environment, so an exported DEBIAN_FRONTEND would not reach apt.
  $sudo env DEBIAN_FRONTEND=noninteractive $APT_GET update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive $APT_GET install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
}

have_mysql_headers() {
  command -v pkg-config >/dev/null 2>&1 \
    && { pkg-config --exists mysqlclient 2>/dev/null || pkg-config --exists libmariadb 2>/dev/null; }
}

build_deps() {
  # mysqlclient (MySqlHook's default driver) compiles against libmysqlclient: it needs
  # pkg-config, the client headers and a C compiler. Skipped when it is already installed.
  if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import MySQLdb' 2>/dev/null; then
    return 0
  fi
  local need=()
  command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
  have_mysql_headers || need+=(default-libmysqlclient-dev)
  command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 || need+=(build-essential)
  # Debian's python3.X ships neither Python.h (python3.X-dev, to compile mysqlclient) nor
  # ensurepip (python3.X-venv, for `python3 -m venv`).
  if command -v "$PYTHON" >/dev/null 2>&1; then
    local py
    py=$("$PYTHON" -c 'import sys; print("python%d.%d" % sys.version_info[:2])' 2>/dev/null) || py=python3
    "$PYTHON" -c 'import os, sysconfig; raise SystemExit(not os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null \
      || need+=("$py-dev")
    [ -x "$VENV/bin/python" ] || "$PYTHON" -c 'import ensurepip' 2>/dev/null || need+=("$py-venv")
  fi
  [ ${#need[@]} -eq 0 ] || need+=(pkg-config)  # the headers are found through it
  # shellcheck disable=SC2207
  need=($(printf '%s\n' "${need[@]}" | sort -u))
  install_packages "${need[@]}"
}

venv() {
  if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "error: $PYTHON not found. Install Python 3.11+ and retry (Debian: apt-get install python3 python3-venv)." >&2
    exit 1
  fi
  if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 11) else 1)'; then
    echo "error: Python 3.11+ is required, $PYTHON is $("$PYTHON" -V 2>&1)." >&2
    exit 1
  fi
  build_deps
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    "$PYTHON" -m venv "$VENV" || {
      echo "error: '$PYTHON -m venv' failed. Debian/Ubuntu: apt-get install python3-venv" >&2
      exit 1
    }
  fi
  say "installing requirements.txt and the project (editable) into $VENV (first time: a few minutes)"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -r requirements.txt
  "$VENV/bin/python" -m pip install --quiet --no-deps -e .
  say "$VENV ready"
}

# ----------------------------------------------------------------- servers
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

services() {
  # The tests start their own PostgreSQL and MariaDB primary + replica pairs (scripts/localdb.py)
  # from the system's server binaries; the cache test uses Redis on 127.0.0.1:6379.
  local need=()
  command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
  command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  install_packages "${need[@]}"
  if ! port_open 6379; then
    say "starting redis-server on 127.0.0.1:6379"
    local dir=${TMPDIR:-/tmp}/zdt-redis
    mkdir -p "$dir"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
      --dir "$dir" --logfile "$dir/redis.log"
  fi
  # `make demo-mysql` expects MariaDB on 3306; the tests do not.
  if ! port_open 3306 && [ -x /usr/sbin/mariadbd ] && [ "$(id -u)" -eq 0 ] && command -v start-stop-daemon >/dev/null 2>&1; then
    say "starting mariadbd on 3306"
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
  fi
  mysql
}

# ----------------------------------------------------------------- Oracle MySQL 9.7
# Debian's unstable suite ships mysql-server-core 9.7 (the release here has no MySQL server), built
# against unstable's C and C++ runtime. Nothing is installed: a private apt configuration under
# .local/mysql downloads the server, the client and their runtime libraries (about 50 MB), dpkg -x
# unpacks them into .local/mysql/root, and scripts/localdb.py runs mysqld through that root's own
# loader. Cached: a second run does nothing. ZDT_MYSQL_ROOT points elsewhere (a root already made).
MYSQL_DIR=${ZDT_MYSQL_DIR:-.local/mysql}
MYSQL_PACKAGES=(mysql-server-core mysql-client-core libc6 libstdc++6 libgcc-s1 libaio1t64 libicu78
  libprotobuf-lite32t64 libprotobuf32t64 libgoogle-perftools4t64 libtcmalloc-minimal4t64 libunwind8
  libmecab2 libnuma1 libtirpc3t64 libssl3t64 libzstd1 liblz4-1 zlib1g libcurl4t64 libfido2-1
  libcbor0.10 libedit2 libbsd0 libmd0 libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0
  libcom-err2 libkeyutils1 libtinfo6 libnghttp2-14 libidn2-0 librtmp1 libssh2-1t64 libpsl5t64
  libbrotli1 libldap2 libsasl2-2 libunistring5 libgnutls30t64 libhogweed6t64 libnettle8t64 libgmp10
  libp11-kit0 libtasn1-6 libffi8 libselinux1 libpcre2-8-0 libcrypt1 libsystemd0 libcap2 liblzma5)

mysql() {
  [ -n "${ZDT_MYSQL_ROOT:-}" ] && return 0
  local root="$MYSQL_DIR/root"
  [ -f "$root/.complete" ] && return 0
  command -v "${APT_GET%% *}" >/dev/null 2>&1 && command -v dpkg >/dev/null 2>&1 || {
    echo "note: no apt-get/dpkg: the MySQL 9.7 tests need ZDT_MYSQL_ROOT (see README)" >&2; return 0; }
  say "fetching Oracle MySQL 9.7 from Debian unstable into $root (once, about 50 MB)"
  local etc="$MYSQL_DIR/apt"
  rm -rf "$etc" "$root.tmp" && mkdir -p "$etc/parts" "$etc/lists/partial" "$etc/cache/archives/partial" "$etc/debs" "$root.tmp"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian unstable main" >"$etc/sources.list"
  local abs; abs=$(cd "$etc" && pwd)
  local opts=(-o "Dir::Etc::SourceList=$abs/sources.list" -o "Dir::Etc::SourceParts=$abs/parts"
    -o "Dir::State::Lists=$abs/lists" -o "Dir::Cache=$abs/cache" -o "Dir::State::status=/dev/null"
    -o Debug::NoLocking=1 -o APT::Sandbox::User=root -qq)
  $APT_GET "${opts[@]}" update
  (cd "$abs/debs" && $APT_GET "${opts[@]}" download "${MYSQL_PACKAGES[@]}")
  for f in "$abs"/debs/*.deb; do dpkg -x "$f" "$root.tmp"; done
  rm -rf "$root" && mv "$root.tmp" "$root" && rm -rf "$abs/debs" "$abs/cache"
  touch "$root/.complete"
  say "MySQL $(scripts/mysqld-private --version 2>/dev/null | sed -n 's/.*Ver \([^ ]*\).*/\1/p') ready in $root"
}

ui_deps() {
  # `make test-ui`: Debian's chromium, driven by Playwright through executable_path (Playwright's
  # own browser download needs a network these machines do not have).
  command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || install_packages chromium
}

case "$step" in
  venv) venv ;;
  build-deps) build_deps ;;
  services) services ;;
  mysql) mysql ;;
  ui-deps) ui_deps ;;
  *) echo "usage: $0 venv [PYTHON] [VENV] | build-deps | services | mysql | ui-deps" >&2; exit 2 ;;
esac
