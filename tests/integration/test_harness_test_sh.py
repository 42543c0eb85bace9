"""scripts/test.sh's progress while its three long runs go on in the background.

The script is sourced (it defines its functions and runs nothing then): the log readers meet
real pytest output and molecule's log format, and the watch loop meets fake runs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.playbook import REPO

SCRIPT = REPO / "scripts" / "test.sh"


def sourced(commands: str, timeout: float = 60, **env: str) -> str:
    done = subprocess.run(["bash", "-c", f"source {SCRIPT}\n{commands}"], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **env}, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def pytest_progress(log: Path) -> str:
    return sourced(f"pytest_progress {log}").strip()


MANY_TESTS = """
import pytest

@pytest.mark.parametrize("i", range(130))
def test_n(i):
    if i == 3:
        pytest.skip("one skipped")
    assert i != 5
"""


@pytest.fixture(scope="module")
def real_log(tmp_path_factory: pytest.TempPathFactory) -> str:
    """What pytest -q -o console_output_style=count really writes (not a hand-made copy)."""
    work = tmp_path_factory.mktemp("counted")
    (work / "test_many.py").write_text(MANY_TESTS)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-o", "console_output_style=count",
                           "-p", "no:cacheprovider", "test_many.py"], cwd=work, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "COLUMNS": "80"}, check=False)
    assert done.returncode == 1, done.stdout  # the one failure
    return done.stdout


def test_pytest_progress_counts_tests_done_and_failed(real_log: str, tmp_path: Path) -> None:
    log = tmp_path / "pytest.log"
    log.write_text(real_log)
    assert pytest_progress(log) == "130/130 done, 1 failed"
    # Mid-run: the first count line, then part of the next line's letters, no count yet.
    first, second = real_log.splitlines()[:2]
    counted = int(re.search(r"\[ *(\d+)/130\]", first).group(1))  # type: ignore[union-attr]
    log.write_text(f"{first}\n{second[:7]}")
    assert pytest_progress(log) == f"{counted + 7}/130 done, 1 failed"
    # Before the first count: letters only, no total known yet.
    log.write_text(first[:4])  # ". . s ." : the failure (test 5) not yet run
    assert pytest_progress(log) == "4 done"


def test_pytest_progress_skips_lines_between_the_letters(tmp_path: Path) -> None:
    log = tmp_path / "pytest.log"
    log.write_text("....[gpu_lab stand-in] building the stand-in hosts' image: about 40 s\n"
                   "[gpu_lab stand-in]     4 s: downloading the Debian packages\n"
                   "[gpu_lab stand-in] stand-in image built in 41 s: /cache/standin.tar.zst\n"
                   "..sF..")
    assert pytest_progress(log) == "10 done, 1 failed"
    log.write_text("")
    assert pytest_progress(log) == "starting"


def test_molecule_progress_names_the_scenario_and_action(tmp_path: Path) -> None:
    log = tmp_path / "molecule.log"
    log.write_text("INFO     [ec2_gpu_host > create] Executing\n"
                   "INFO     [ec2_gpu_host > create] Executed: Successful\n"
                   "INFO     [ec2_gpu_host > destroy] Executing\n"
                   "INFO     [jupyter_server > converge] Executing\n"
                   "\nPLAY [Converge] ****\n\nTASK [a > b] ******\n"
                   "ok: [instance]\n")
    assert sourced(f"molecule_progress {log} 4").strip() == "jupyter_server > converge (scenario 2 of 4)"
    log.write_text("")
    assert sourced(f"molecule_progress {log} 4").strip() == "starting"


WATCHED = r"""
d={dir}
molecule_scenarios=2
start_run molecule molecule "$d/m.log" bash -c '
  echo "INFO     [a > create] Executing"; sleep 3
  echo "INFO     [b > converge] Executing"; sleep 1
  echo "INFO     Molecule executed 2 scenarios (2 successful)"'
start_run "pytest on stand-in hosts" pytest "$d/h.log" bash -c '
  printf ".."; sleep 3; printf ".F"; sleep 2; echo; echo "1 failed, 3 passed in 5.00s"; exit 1'
start_run "pytest, the rest" pytest "$d/p.log" bash -c '
  printf "..."; sleep 1; echo "   [3/3]"; echo "3 passed in 1.00s"'
watch_start=$SECONDS
watch_runs
echo "exit codes: ${{run_rcs[*]}}"
"""


def test_watch_runs_says_where_each_run_is_and_when_it_ends(tmp_path: Path) -> None:
    out = sourced(WATCHED.format(dir=tmp_path), GPU_LAB_PROGRESS_EVERY="1")
    lines = out.splitlines()
    assert lines[-1] == "exit codes: 0 1 0"
    progress = [line for line in lines if re.match(r"  \[\dm\d\ds\] molecule: ", line)]
    assert progress, out
    assert all(" | pytest on stand-in hosts: " in line and " | pytest, the rest: " in line for line in progress)
    assert any("molecule: a > create (scenario 1 of 2)" in line for line in progress), out
    assert any("pytest on stand-in hosts: 2 done" in line for line in progress), out
    assert any("pytest, the rest: ended (exit 0)" in line for line in progress), out
    ended = [line for line in lines if " ended, exit " in line]
    assert [re.sub(r"^  \[\dm\d\ds\] ", "", line) for line in ended] == [
        "pytest, the rest ended, exit 0: 3 passed in 1.00s",
        "molecule ended, exit 0: Molecule executed 2 scenarios (2 successful)",
        "pytest on stand-in hosts ended, exit 1: 1 failed, 3 passed in 5.00s",
    ]


def test_watch_runs_returns_when_the_runs_end_not_at_the_next_progress_line(tmp_path: Path) -> None:
    """Bounded by the runs: with 30 s between progress lines and runs of about 2 s, it
    returns about when they end, having said only that they ended."""
    started = time.monotonic()
    out = sourced(WATCHED.format(dir=tmp_path).replace("sleep 3", "sleep 1"), GPU_LAB_PROGRESS_EVERY="30")
    took = time.monotonic() - started
    lines = out.splitlines()
    assert lines[-1] == "exit codes: 0 1 0"
    assert [line for line in lines if " ended, exit " not in line] == [lines[-1]]
    assert took < 8, out


def test_scripts_are_shellcheck_clean() -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt install shellcheck)")
    scripts = ["scripts/test.sh", "scripts/bootstrap.sh", "scripts/demo.sh", ".ci/run"]
    done = subprocess.run(["shellcheck", *scripts], cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout


STUBS = {
    # The linters pass; molecule and the two pytest halves say a little and end.
    "ruff": "exit 0", "yamllint": "exit 0", "ansible-lint": "exit 0", "ansible-galaxy": "exit 0",
    # The stand-in image is made (when it can be) before the runs, in the foreground.
    "python": """echo "python $*" >> "$STUB_ARGS"
grep -q ensure_base <<<"$*" && echo '[gpu_lab stand-in] building the image' >&2""",
    "molecule": """echo "MOLECULE_GLOB=$MOLECULE_GLOB $*" >> "$STUB_ARGS"
echo "INFO     [only > converge] Executing"; sleep 3  # seen by a progress line (1 s apart)
printf 'SCENARIO RECAP\\nonly : actions=1 successful=1\\n'
echo "INFO     Molecule executed 1 scenario (1 successful)\"""",
    "pytest": """echo "pytest $*" >> "$STUB_ARGS"
case " $* " in
  *" tests "*) printf '..F'; sleep 2; echo '   [3/3]'; echo '1 failed, 2 passed in 2.00s'; exit 1 ;;
  *) printf '..'; sleep 1; echo '   [2/2]'; echo '2 passed in 1.00s' ;;
esac""",
}


def test_the_whole_script_keeps_its_logs_exit_code_and_closing_report(tmp_path: Path) -> None:
    """scripts/test.sh itself, on a copy of the repo's layout with stand-in tools: the
    progress is new, the rest is as it was (logs, the closing report, the exit code)."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy2(SCRIPT, repo / "scripts" / "test.sh")
    # The publishing checks' scripts: each says its steps, as the real ones do.
    for name in ("galaxy_importer", "ansible_test"):
        stub = repo / "scripts" / f"{name}.sh"
        stub.write_text(f'#!/usr/bin/env bash\necho "{name} $*" >> "$STUB_ARGS"\n'
                        f'printf "\\033[1m[{name.replace("_", "-")}]\\033[0m %s\\n" "done $*"\n')
        stub.chmod(0o755)
    (repo / "molecule" / "only").mkdir(parents=True)
    (repo / "molecule" / "only" / "molecule.yml").write_text("---\n")
    bin_dir = repo / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name, body in STUBS.items():
        (bin_dir / name).write_text(f"#!/usr/bin/env bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    args = tmp_path / "args"
    done = subprocess.run(["bash", str(repo / "scripts" / "test.sh")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, check=False,
                          env={**os.environ, "GPU_LAB_PROGRESS_EVERY": "1", "STUB_ARGS": str(args)})
    out = done.stdout
    assert done.returncode == 1, out + done.stderr  # the rest's failure fails the whole
    logs = repo / "tests" / "output"
    assert "1 failed, 2 passed" in (logs / "pytest.log").read_text()
    assert "2 passed" in (logs / "pytest-hosts.log").read_text()
    assert "SCENARIO RECAP" in (logs / "molecule.log").read_text()
    assert re.search(r"molecule: only > converge \(scenario 1 of 1\)", out), out
    assert "pytest, the rest ended, exit 1: 1 failed, 2 passed in 2.00s" in out
    report = out[out.index("== molecule: exit 0"):]
    assert "SCENARIO RECAP\nonly : actions=1 successful=1" in report
    assert report.index("== pytest, tests on stand-in hosts: exit 0") < report.index("== pytest, AWS flows: exit 0") \
        < report.index("== pytest after molecule: exit 0") < report.index("== pytest, the rest: exit 1 (")
    # The late run starts once molecule has ended (its pytest ends after molecule's "ended").
    assert "2 passed" in (logs / "pytest-late.log").read_text()
    assert out.index("molecule ended, exit 0") < out.index("pytest after molecule ended, exit 0"), out
    # The publishing checks: the importer, sanity, then units; their own lines in the report.
    checks = report[report.index("== publishing checks: exit 0"):report.index("== pytest, the rest")]
    assert "[galaxy-importer] done \n[ansible-test] done \n[ansible-test] done units\n" in checks, checks
    assert report.rstrip().endswith("1 failed, 2 passed in 2.00s")
    called = args.read_text()
    assert called.index("galaxy_importer ") < called.index("ansible_test \n") < called.index("ansible_test units")
    # The image first, in the foreground (its lines on the terminal), then the runs.
    assert "ensure_base()" in called
    assert called.index("python -c") < min(called.index("MOLECULE_GLOB"), called.index("pytest "))
    assert "[gpu_lab stand-in] building the image" in done.stderr
    assert "MOLECULE_GLOB=molecule/*/molecule.yml test --all" in called
    assert called.count("-o console_output_style=count") == 4
    assert "--deselect=tests/integration/test_key_recovery.py" in called
    assert "--deselect=tests/integration/test_standin.py" in called
