#!/usr/bin/env bash
# `ansible-test sanity` on the collection as it ships (built with ansible-galaxy), offline but
# for PyPI, for the newest ansible-core (the project's .venv) and the oldest that
# meta/runtime.yml's requires_ansible claims (its own venv, installed here from PyPI), on
# every Python each of them supports that this machine has.
# Usage: scripts/ansible_test.sh [units] [CORE_VERSION...] [-- ANSIBLE_TEST_ARGS...]
#   default versions: the .venv's ansible-core and $floor below; e.g.
#   scripts/ansible_test.sh 2.21.5 -- --test pylint
# Set up first: scripts/bootstrap.sh (the .venv, amazon.aws through the `ansible` package).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
# The oldest ansible-core meta/runtime.yml claims (requires_ansible): tested here too.
floor=2.19.14
cache=${GPU_LAB_CACHE:-$HOME/.cache/gpu_lab}/ansible-test
# Outside any git work tree: ansible-test would look at the files that git tracks only.
# A failed run's tree stays for its tests/output; a day later the next run removes it.
mkdir -p "$cache"
find "$cache" -maxdepth 1 -name 'run.*' -mmin +1440 -exec rm -rf {} +
work=$(mktemp -d "$cache/run.XXXXXX")

say() { printf '\033[1m[ansible-test]\033[0m %s\n' "$*"; }
die() { printf '\033[1;31m[ansible-test]\033[0m %s\n' "$*" >&2; exit 1; }

# `units` first: ansible-test units (the shipped tests/unit) instead of sanity, on the
# .venv's Python, for the newest ansible-core unless versions are given.
command=sanity
if [[ ${1:-} == units ]]; then command=units; shift; fi
versions=() extra=()
while (($#)); do
  if [[ $1 == -- ]]; then shift; extra=("$@"); break; fi
  versions+=("$1"); shift
done
[[ -x "$repo/.venv/bin/ansible-test" ]] || die "no $repo/.venv: run scripts/bootstrap.sh"
newest=$("$repo/.venv/bin/python" -c 'import ansible.release as r; print(r.__version__)')
if [[ $command == units ]]; then
  ((${#versions[@]})) || versions=("$newest")
  ((${#extra[@]})) || extra=(--python "$("$repo/.venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')")
fi
((${#versions[@]})) || versions=("$newest" "$floor")

# --- the Pythons ansible-test may use: every pythonX.Y this machine has --------------------
# ansible-test finds pythonX.Y on PATH; pyenv's shims hide the versions not activated, so a
# folder of links to the real interpreters goes first on PATH.
mkdir -p "$work/bin"
pyenv_all=$(pyenv versions --bare 2>/dev/null | paste -sd: - || true)
for v in 3.8 3.9 3.10 3.11 3.12 3.13 3.14; do
  exe=$(PYENV_VERSION=$pyenv_all "python$v" -c 'import sys; print(sys.executable)' 2>/dev/null) || continue
  [[ -x $exe ]] && ln -s "$exe" "$work/bin/python$v"
done
export PATH="$work/bin:$PATH"
pythons=$(for exe in "$work"/bin/python3.*; do printf '%s ' "${exe##*/python}"; done)
base_python=$("$repo/.venv/bin/python" -c 'import sys; print(sys._base_executable)')

# --- the collection as it ships, where ansible-test wants it --------------------------------
# .../ansible_collections/csdl/gpu_lab from `ansible-galaxy collection build` (build_ignore
# applies: no local_cloud, .venv, tests/output), so the tests see exactly the published files,
# whatever git tracks; amazon.aws (a dependency the modules import) beside it.
tree="$work/tree/ansible_collections"
mkdir -p "$tree/csdl/gpu_lab" "$tree/amazon" "$work/dist"
"$repo/.venv/bin/ansible-galaxy" collection build "$repo" --output-path "$work/dist" >/dev/null
tar -xzf "$work"/dist/csdl-gpu_lab-*.tar.gz -C "$tree/csdl/gpu_lab"
aws=$(cd "$repo" && "$repo/.venv/bin/ansible-galaxy" collection list amazon.aws --format json 2>/dev/null |
  "$repo/.venv/bin/python" -c 'import json, sys; print(next(iter(json.load(sys.stdin))))')
cp -r "$aws/amazon/aws" "$tree/amazon/aws"

# --- ansible-test's pip bootstrap, offline --------------------------------------------------
# Workaround for https://github.com/ansible/ansible/issues/77304: ansible-test's --venv
# bootstraps pip in each sanity venv with get-pip.py downloaded from
# https://ci-files.testing.ansible.com (unreachable here), unless
# ~/.ansible/test/cache/get_pip_<pip version>.py exists. Ours stands in for it: ensurepip
# (the interpreter's own pip), then the pip version and packages asked for, from PyPI.
# ansible-test runs it as `python get_pip.py --disable-pip-version-check pip==X
# --no-setuptools --no-wheel`; a real get-pip.py already cached is left alone.
write_get_pip() {  # PIP_VERSION
  local file="$HOME/.ansible/test/cache/get_pip_${1//./_}.py"
  if [[ -f $file ]] && ! grep -q 'gpu_lab get-pip stand-in' "$file"; then return 0; fi
  mkdir -p "$(dirname "$file")"
  cat >"$file" <<'EOF'
"""gpu_lab get-pip stand-in, written by scripts/ansible_test.sh.

ansible-test's get-pip.py comes from https://ci-files.testing.ansible.com, unreachable
offline (https://github.com/ansible/ansible/issues/77304): this bootstraps pip with ensurepip,
then installs the pip version and packages ansible-test asked for from the package index.
"""
import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ('--no-setuptools', '--no-wheel')]
subprocess.check_call([sys.executable, '-m', 'ensurepip', '--default-pip'], stdout=subprocess.DEVNULL)
subprocess.check_call([sys.executable, '-m', 'pip', 'install', '--quiet'] + args)
EOF
}

# --- an ansible-core's ansible-test: the .venv's, or one in its own venv --------------------
ansible_test_of() {  # VERSION -> path of its ansible-test
  local version=$1 venv="$cache/$1"
  if [[ $version == "$newest" ]]; then echo "$repo/.venv/bin/ansible-test"; return 0; fi
  if [[ ! -f "$venv/.installed" ]]; then
    say "installing ansible-core $version into $venv (PyPI)" >&2
    rm -rf "$venv"
    "$base_python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet "ansible-core==$version" >&2
    touch "$venv/.installed"
  fi
  echo "$venv/bin/ansible-test"
}

failed=() timings=()
for version in "${versions[@]}"; do
  at=$(ansible_test_of "$version")
  pip_version=$("$(dirname "$at")/python" - <<'EOF'
import re, ansible_test._internal.python_requirements as m
print(re.search(r"pip='([^']+)'", open(m.__file__).read()).group(1))
EOF
)
  write_get_pip "$pip_version"
  say "ansible-core $version: $command (Pythons found: $pythons)"
  start=$SECONDS
  # --venv: each test's requirements in venvs ansible-test makes from PyPI (cached in
  # ~/.ansible/test/venv); no docker. Python versions: all ansible-test supports and finds.
  if (cd "$tree/csdl/gpu_lab" && "$at" "$command" --venv --color "${extra[@]}"); then rc=0; else rc=$?; fi
  timings+=("$version: $((SECONDS - start))s, exit $rc")
  ((rc == 0)) || failed+=("$version")
done
say "times: $(printf '%s; ' "${timings[@]}")"
if ((${#failed[@]})); then
  die "$command failed for ansible-core ${failed[*]} (results: $tree/csdl/gpu_lab/tests/output)"
fi
rm -rf "$work"
say "$command passed for ansible-core ${versions[*]}"
