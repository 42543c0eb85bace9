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

# molecule and the two halves of pytest each run their own emulated clouds (own processes,
# ports and stand-in state dirs), so they run side by side: the tests mostly wait (on booting
# hosts, idle windows, playbooks' SSH round trips), and on 2 cores three runs side by side take
# about two thirds of the time of one after the other. pytest's halves: the tests built on
# stand-in hosts (listed here), and everything else (a new test file lands there by default).
# Each writes a log; molecule's is shown first, pytest's last (their closing lines are the counts).
logs="$repo/tests/output"
mkdir -p "$logs"
hosts_tests=(tests/integration/test_autostop_flow.py tests/integration/test_whole_flow.py
             tests/integration/test_idle_autostop.py tests/integration/test_standin.py
             tests/integration/test_secrets.py tests/integration/test_class.py)
step "molecule (all scenarios) and pytest (two halves), side by side; logs in tests/output/"
start=$SECONDS
MOLECULE_GLOB='molecule/*/molecule.yml' molecule test --all >"$logs/molecule.log" 2>&1 &
molecule_pid=$!
pytest -q --durations=8 "${hosts_tests[@]}" >"$logs/pytest-hosts.log" 2>&1 &
hosts_pid=$!
pytest -q --durations=8 tests "${hosts_tests[@]/#/--deselect=}" >"$logs/pytest.log" 2>&1 &
pytest_pid=$!
molecule_rc=0; wait "$molecule_pid" || molecule_rc=$?
hosts_rc=0; wait "$hosts_pid" || hosts_rc=$?
pytest_rc=0; wait "$pytest_pid" || pytest_rc=$?

step "molecule: exit $molecule_rc"
if [[ $molecule_rc -ne 0 ]]; then tail -150 "$logs/molecule.log"; fi
sed -n '/SCENARIO RECAP/,$p' "$logs/molecule.log"
step "pytest, tests on stand-in hosts: exit $hosts_rc"
cat "$logs/pytest-hosts.log"
step "pytest, the rest: exit $pytest_rc ($((SECONDS - start)) s for all three)"
cat "$logs/pytest.log"
exit $((molecule_rc != 0 || hosts_rc != 0 || pytest_rc != 0))
