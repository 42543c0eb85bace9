#!/usr/bin/env bash
# Sets up everything gpu_lab needs, idempotently, and says what it did:
#   - a Python >= 3.12 (ansible-core 2.20+ needs it), found on this machine;
#   - .venv with the pinned packages of requirements/test.txt;
#   - the collection link that lets `csdl.gpu_lab.*` resolve from this checkout;
#   - on Linux as root: the Debian packages the stand-in hosts and tests use.
# Usage: scripts/bootstrap.sh [--no-system]
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
venv="$repo/.venv"
want_system=1
[[ "${1:-}" == "--no-system" ]] && want_system=0

say() { printf '\033[1m[gpu_lab setup]\033[0m %s\n' "$*"; }
die() { printf '\033[1;31m[gpu_lab setup]\033[0m %s\n' "$*" >&2; exit 1; }

python_ok() {
  "$1" -c 'import sys, venv, ensurepip; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1
}

find_python() {
  local c candidates=()
  [[ -n "${GPU_LAB_PYTHON:-}" ]] && candidates+=("$GPU_LAB_PYTHON")
  candidates+=(python3.13 python3.12 python3.14 python3)
  # pyenv installs versions that its shims hide until activated.
  local root="${PYENV_ROOT:-$HOME/.pyenv}"
  for c in "$root"/versions/3.1[2-9]*/bin/python3 /usr/local/bin/python3.1[2-9] \
           /opt/homebrew/bin/python3.1[2-9] /usr/bin/python3.1[2-9]; do
    [[ -x "$c" ]] && candidates+=("$c")
  done
  for c in "${candidates[@]}"; do
    if command -v "$c" >/dev/null 2>&1 && python_ok "$c"; then
      command -v "$c"
      return 0
    fi
  done
  return 1
}

system_packages=(mmdebstrap systemd-container iproute2 nftables zstd openssh-client
                 git zsh chromium curl ca-certificates procps shellcheck)
install_system_packages() {
  [[ $want_system == 1 ]] || return 0
  if [[ "$(uname -s)" != Linux || $EUID -ne 0 ]] || ! command -v apt-get >/dev/null; then
    say "not root on Debian/Ubuntu: skipping system packages (${system_packages[*]});"
    say "the tests that need a booted stand-in host will skip and say why."
    return 0
  fi
  local missing=() p
  for p in "${system_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if ((${#missing[@]})); then
    say "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

python=$(find_python) || die "No Python 3.12 or newer found (ansible-core 2.20+ needs it).
Install one (Debian/Ubuntu: apt install python3.12 python3.12-venv; macOS: brew install python@3.12;
or pyenv install 3.12) and run this again, or point GPU_LAB_PYTHON at it."

# The environment is kept per requirements hash in the user's cache and .venv links to it,
# so a second checkout (or CI's fresh clone) on the same machine does not install again.
# Only what this environment installs (requirements/tools-*.txt make their own, elsewhere).
want=$( (cat "$repo"/requirements/runtime.txt "$repo"/requirements/test.txt; "$python" -V) | sha256sum | cut -c1-16)
store="${GPU_LAB_CACHE:-$HOME/.cache/gpu_lab}/venvs/$want"
if [[ ! -x "$store/bin/ansible-playbook" ]] || ! "$store/bin/python" -c 'import ansible, boto3, moto' 2>/dev/null; then
  say "creating the Python environment with $("$python" -V) ($python); pip install takes about a minute"
  rm -rf "$store"
  mkdir -p "$(dirname "$store")"
  "$python" -m venv "$store"
  log="$store/pip-install.log"
  if ! "$store/bin/pip" install -q --disable-pip-version-check -r "$repo/requirements/test.txt" >"$log" 2>&1; then
    tail -20 "$log" >&2
    rm -rf "$store"
    die "pip install failed (see the lines above)"
  fi
else
  say "Python environment up to date ($("$store/bin/python" -V), $store)"
fi
if [[ "$(readlink "$venv" 2>/dev/null)" != "$store" ]]; then
  rm -rf "$venv"
  ln -s "$store" "$venv"
fi

# ansible-lint links the collection here too; ansible.cfg puts this path first so
# csdl.gpu_lab.* resolves to this checkout.
link="$repo/.ansible/collections/ansible_collections/csdl/gpu_lab"
if [[ "$(readlink "$link" 2>/dev/null)" != "../../../.." ]]; then
  mkdir -p "$(dirname "$link")"
  rm -rf "$link"
  ln -s ../../../.. "$link"
fi

install_system_packages
# Not `ansible --version | head -1`: Ansible writes after head has exited and dies with a
# BrokenPipeError traceback. The version from the package itself, in the same words.
say "ready: $("$venv/bin/python" -c 'from ansible.release import __version__; print(f"ansible [core {__version__}]")')"
