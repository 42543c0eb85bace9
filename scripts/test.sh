#!/usr/bin/env bash
# Every check the project has, offline: lint, pytest (unit, emulator, stand-in hosts),
# molecule scenarios. `scripts/test.sh lint` runs the linters only.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
export PATH="$repo/.venv/bin:$PATH"
# No real AWS account is ever used by the tests: each test bed sets its own endpoint.
unset AWS_PROFILE AWS_DEFAULT_PROFILE AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN
export ANSIBLE_FORCE_COLOR=0 PY_COLORS=0
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "ruff"
ruff check .
step "yamllint"
yamllint -s .
step "ansible-lint (production profile)"
ansible-lint --offline -q
step "ansible-galaxy collection install -r requirements.yml (bundled, offline)"
ansible-galaxy collection install -r requirements.yml >/dev/null
[[ "${1:-}" == lint ]] && exit 0

step "molecule"
export MOLECULE_GLOB='molecule/*/molecule.yml'
molecule test --all

step "pytest"
pytest -q tests
