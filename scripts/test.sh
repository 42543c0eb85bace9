#!/usr/bin/env bash
# Every check the project has, offline: lint, pytest (unit, emulator, stand-in hosts),
# molecule scenarios. `scripts/test.sh lint` runs the linters only.
# GPU_LAB_PROGRESS_EVERY: seconds between the progress lines of the long runs (30).
set -euo pipefail

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# --- where the runs in the background are, read from their logs --------------------------

# pytest -q -o console_output_style=count writes a letter per test (. s F E x X) and, where a
# line is full (about 60 tests), "[ N/M]". The letters after the last count are counted too:
# on stand-in hosts a line can take minutes to fill. Lines of other text (the stand-in image's
# progress) are skipped; the report after the tests (its first line starts with = or _) ends it.
pytest_progress() {  # LOG -> "42/310 done, 1 failed", "12 done" before the first count
  [[ -s "$1" ]] || { echo "starting"; return 0; }
  awk '
    function letters(s) { return match(s, /^[.sFExX]+/) ? substr(s, 1, RLENGTH) : "" }
    /^[=_]/ { exit }
    {
      run = letters($0)
      if (run == "") next
      rest = substr($0, length(run) + 1)
      if (match(rest, /^[ \t]*\[ *[0-9]+\/[0-9]+\][ \t]*$/)) {
        count = rest; gsub(/[^0-9\/]/, "", count); split(count, nm, "/")
        done = nm[1] + 0; total = nm[2] + 0; after = 0
      } else if (rest == "" || rest ~ /^[ \t[]/) {
        after += length(run)
      } else next
      failed += gsub(/[FE]/, "", run)
    }
    END {
      n = done + after
      if (total > 0 && n > total) n = total
      printf "%s done%s\n", (total > 0 ? n "/" total : n), (failed ? ", " failed " failed" : "")
    }' "$1"
}

# molecule logs each step as "INFO     [<scenario> > <action>] ..." (a log level first: not
# Ansible's "TASK [...]" lines in between).
molecule_progress() {  # LOG SCENARIOS -> "jupyter_server > converge (scenario 2 of 4)"
  [[ -s "$1" ]] || { echo "starting"; return 0; }
  awk -v scenarios="$2" '
    match($0, /^(DEBUG|INFO|WARNING|ERROR|CRITICAL) +\[[^] >]+ > [^]]+\]/) {
      at = substr($0, RSTART, RLENGTH); sub(/^[A-Z]+ +\[/, "", at); sub(/\]$/, "", at)
      scenario = at; sub(/ > .*/, "", scenario)
      if (!(scenario in seen)) { seen[scenario] = 1; n++ }
    }
    END {
      if (at == "") print "starting"
      else printf "%s (scenario %d of %d)\n", at, n, scenarios
    }' "$1"
}

# What a finished run's log ends with: pytest's counts, molecule's "Molecule executed ...".
final_words() {  # LOG
  awk '
    /Molecule executed/ { m = $0; sub(/^[A-Z]+ +/, "", m) }
    NF { last = $0 }
    END { w = (m != "" ? m : last); print (w == "" ? "(empty log)" : substr(w, 1, 160)) }' "$1"
}

# The runs watched: parallel arrays, one entry per background run.
run_names=() run_kinds=() run_logs=() run_pids=() run_rcs=()
molecule_scenarios=0
progress_every=${GPU_LAB_PROGRESS_EVERY:-30}
watch_start=$SECONDS

elapsed() {
  local s=$((SECONDS - watch_start))
  printf '%dm%02ds' $((s / 60)) $((s % 60))
}

# The lines a step script says of itself ("[galaxy-importer] ...", "[ansible-test] ..."),
# without their colours.
steps_said() {  # LOG
  sed 's/\x1b\[[0-9;]*m//g' "$1" 2>/dev/null | grep -a '^\[[a-z-]*\] ' || true
}

progress_of() {  # INDEX
  if [[ ${run_kinds[$1]} == molecule ]]; then
    molecule_progress "${run_logs[$1]}" "$molecule_scenarios"
  elif [[ ${run_kinds[$1]} == steps ]]; then  # a script that says each step on a line
    local said
    said=$(steps_said "${run_logs[$1]}" | tail -1 | cut -c1-70)
    echo "${said:-starting}"
  else
    pytest_progress "${run_logs[$1]}"
  fi
}

# Waits for every run; every $progress_every s one line saying where each is, and one line
# for each run as it ends. Returns when the last has ended; run_rcs holds their exit codes.
watch_runs() {
  local i left line status n=${#run_pids[@]}
  local next=$((SECONDS + progress_every))
  while :; do
    left=0
    for ((i = 0; i < n; i++)); do
      [[ -z "${run_rcs[i]:-}" ]] || continue
      if kill -0 "${run_pids[i]}" 2>/dev/null; then
        left=$((left + 1))
        continue
      fi
      run_rcs[i]=0
      wait "${run_pids[i]}" || run_rcs[i]=$?
      printf '  [%s] %s ended, exit %s: %s\n' "$(elapsed)" "${run_names[i]}" "${run_rcs[i]}" \
        "$(final_words "${run_logs[i]}")"
    done
    ((left > 0)) || return 0
    if ((SECONDS >= next)); then
      line=""
      for ((i = 0; i < n; i++)); do
        if [[ -n "${run_rcs[i]:-}" ]]; then
          status="ended (exit ${run_rcs[i]})"
        else
          status=$(progress_of "$i")
        fi
        line+="${line:+ | }${run_names[i]}: $status"
      done
      printf '  [%s] %s\n' "$(elapsed)" "$line"
      next=$((SECONDS + progress_every))
    fi
    sleep 1
  done
}

start_run() {  # NAME KIND LOG COMMAND... (in the background, output to LOG)
  local name=$1 kind=$2 log=$3
  shift 3
  "$@" >"$log" 2>&1 &
  run_names+=("$name") run_kinds+=("$kind") run_logs+=("$log") run_pids+=("$!")
}

main() {
  repo=$(cd "$(dirname "$0")/.." && pwd)
  cd "$repo"
  export PATH="$repo/.venv/bin:$PATH"
  # No real AWS account is ever used by the tests: each test bed sets its own endpoint.
  unset AWS_PROFILE AWS_DEFAULT_PROFILE AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN
  export ANSIBLE_FORCE_COLOR=0 PY_COLORS=0

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
  local logs="$repo/tests/output"
  mkdir -p "$logs"
  local hosts_tests=(tests/integration/test_autostop_flow.py tests/integration/test_whole_flow.py
                     tests/integration/test_idle_autostop.py tests/integration/test_standin.py
                     tests/integration/test_secrets.py tests/integration/test_class.py
                     tests/integration/test_guard_host.py tests/integration/test_demo.py
                     tests/integration/test_spot_notice.py tests/integration/test_shelve_timer.py)
  # The AWS flows on the emulator (many playbook runs, no stand-in host): a run of their own,
  # so the playbooks' CPU work spreads over both cores once molecule is done.
  local flows_tests=(tests/integration/test_off_path.py tests/integration/test_bad_input.py
                     tests/integration/test_modules_lab_host.py tests/integration/test_modules_lab_info.py
                     tests/integration/test_throttling.py tests/integration/test_workstation_shortcuts.py
                     tests/integration/test_workstation_in_the_way.py tests/integration/test_capacity.py
                     tests/integration/test_spot.py)
  # Started when molecule has ended (its run is the shortest): long tests that would otherwise
  # keep "the rest" running alone at the end, on a machine with a core to spare by then.
  local late_tests=(tests/integration/test_key_recovery.py tests/integration/test_dlami.py
                    tests/integration/test_start_capacity.py tests/integration/test_shelve.py)
  local scenarios=(molecule/*/molecule.yml)
  molecule_scenarios=${#scenarios[@]}
  # count, not %: a test count is the progress line's "done" figure.
  local pytest_args=(-q --durations=8 -o console_output_style=count)
  # The stand-in hosts' image, made here in the foreground when missing (about 40 s, once),
  # where its progress reaches the terminal: inside the runs it would only reach their logs,
  # and molecule's cloud would wait on the lock of the build that pytest had started.
  python -c 'from local_cloud.cloud import hosts_unavailable_reason
if hosts_unavailable_reason() is None:
    from local_cloud.standin.image import ensure_base
    ensure_base()' || echo "  (no stand-in image could be made here; the runs will say why)"
  step "molecule, pytest (four parts) and the publishing checks, side by side; logs in tests/output/"
  echo "  (a line every ${progress_every} s saying where each is; about 20 minutes in all)"
  watch_start=$SECONDS
  start_run molecule molecule "$logs/molecule.log" \
    env MOLECULE_GLOB='molecule/*/molecule.yml' molecule test --all
  start_run "pytest on stand-in hosts" pytest "$logs/pytest-hosts.log" \
    pytest "${pytest_args[@]}" "${hosts_tests[@]}"
  start_run "pytest, AWS flows" pytest "$logs/pytest-flows.log" \
    pytest "${pytest_args[@]}" "${flows_tests[@]}"
  start_run "pytest, the rest" pytest "$logs/pytest.log" \
    pytest "${pytest_args[@]}" tests "${hosts_tests[@]/#/--deselect=}" "${flows_tests[@]/#/--deselect=}" \
    "${late_tests[@]/#/--deselect=}"
  # shellcheck disable=SC2016  # $0 and $@ are the inner shell's: molecule's pid, pytest's arguments
  start_run "pytest after molecule" pytest "$logs/pytest-late.log" \
    bash -c 'while kill -0 "$0" 2>/dev/null; do sleep 2; done; exec pytest "$@"' "${run_pids[0]}" \
    "${pytest_args[@]}" "${late_tests[@]}"
  # What Galaxy and the Ansible ecosystem judge a collection by, on the built tarball
  # (docs/publishing.md): galaxy-importer (defaults, then version 1.0.0 or more required),
  # ansible-test sanity (the newest ansible-core and requires_ansible's floor), ansible-test units.
  start_run "publishing checks" steps "$logs/publishing.log" \
    bash -c 'scripts/galaxy_importer.sh && scripts/ansible_test.sh && scripts/ansible_test.sh units'
  watch_runs
  local molecule_rc=${run_rcs[0]} hosts_rc=${run_rcs[1]} flows_rc=${run_rcs[2]} pytest_rc=${run_rcs[3]}
  local late_rc=${run_rcs[4]} publishing_rc=${run_rcs[5]}

  step "molecule: exit $molecule_rc"
  if [[ $molecule_rc -ne 0 ]]; then tail -150 "$logs/molecule.log"; fi
  sed -n '/SCENARIO RECAP/,$p' "$logs/molecule.log"
  step "pytest, tests on stand-in hosts: exit $hosts_rc"
  cat "$logs/pytest-hosts.log"
  step "pytest, AWS flows: exit $flows_rc"
  cat "$logs/pytest-flows.log"
  step "pytest after molecule: exit $late_rc"
  cat "$logs/pytest-late.log"
  step "publishing checks: exit $publishing_rc"
  if [[ $publishing_rc -ne 0 ]]; then tail -80 "$logs/publishing.log"; else steps_said "$logs/publishing.log" | tail -8; fi
  step "pytest, the rest: exit $pytest_rc ($((SECONDS - watch_start)) s for all six)"
  cat "$logs/pytest.log"
  exit $((molecule_rc != 0 || hosts_rc != 0 || flows_rc != 0 || pytest_rc != 0 || late_rc != 0 ||
    publishing_rc != 0))
}

# Sourced (tests/integration/test_harness_test_sh.py tests the progress functions): define only.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
