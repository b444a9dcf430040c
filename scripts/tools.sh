#!/usr/bin/env bash
# Runs a pinned Python tool: `scripts/tools.sh CMD [ARGS...]`, e.g.
#   scripts/tools.sh zizmor --offline .github/workflows/
#
# The tools live in a virtualenv at .venv-tools (TOOLS_VENV overrides), made
# from scripts/tools-requirements.txt, the one list of pins. The virtualenv is
# (re)made only when it is missing or was made from another list, so a run
# with everything in place costs one file comparison. Needs python3 with venv
# (Debian: apt-get install python3-venv) and, to install, PyPI.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${TOOLS_VENV:-$root/.venv-tools}
req=$root/scripts/tools-requirements.txt
# The requirements the virtualenv was last installed from, copied there once
# the install succeeded.
stamp=$venv/.tools-requirements.txt

die() { echo "tools.sh: $*" >&2; exit 1; }

[ $# -gt 0 ] || die "usage: scripts/tools.sh CMD [ARGS...] (the tools: $req)"
cmd=$1
shift

up_to_date() { [ -x "$venv/bin/python" ] && cmp -s "$req" "$stamp"; }

# A fresh virtualenv each time, so a pin taken off the list leaves nothing behind.
install() {
  command -v python3 >/dev/null || die "python3 is not installed"
  python3 -c 'import ensurepip' 2>/dev/null \
    || die "python3 cannot make a virtualenv (Debian: apt-get install python3-venv)"
  echo "tools.sh: installing $(grep -v '^[[:space:]]*\(#\|$\)' "$req" | tr '\n' ' ')into $venv" >&2
  python3 -m venv --clear "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --no-input --require-virtualenv -r "$req"
  cp "$req" "$stamp"
}

if ! up_to_date; then
  mkdir -p "$(dirname "$venv")"
  # One installer at a time (two `make lint` at once); the other waits, then
  # finds the work done.
  exec 9>"$venv.lock"
  flock 9
  up_to_date || install
  flock -u 9
  exec 9>&-
fi

[ -x "$venv/bin/$cmd" ] || die "$cmd is not in $venv/bin (is it in $req?)"
exec "$venv/bin/$cmd" "$@"
