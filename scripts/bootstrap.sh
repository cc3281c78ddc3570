#!/usr/bin/env bash
# Create the virtualenv and install requirements.txt, explaining what is missing when it cannot.
set -euo pipefail
PYTHON=${1:-python3}
VENV=${2:-.venv}

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "error: $PYTHON not found. Install Python 3.11 (python3.11, python3.11-venv) and retry." >&2
  exit 1
fi
if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 11) else 1)'; then
  echo "error: Python 3.11+ is required, $PYTHON is $("$PYTHON" -V 2>&1)." >&2
  exit 1
fi
# mysqlclient (MySqlHook's default driver) compiles against libmysqlclient.
if ! "$VENV/bin/python" -c 'import MySQLdb' 2>/dev/null \
   && ! pkg-config --exists mysqlclient 2>/dev/null && ! pkg-config --exists libmariadb 2>/dev/null; then
  echo "error: mysqlclient needs pkg-config and the MySQL client headers to build." >&2
  echo "  Debian/Ubuntu: sudo apt-get install pkg-config default-libmysqlclient-dev build-essential" >&2
  echo "  macOS:         brew install pkg-config mysql-client" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
echo "==> installing requirements.txt into $VENV (first time: a few minutes)"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -r requirements.txt
echo "==> $VENV ready"
