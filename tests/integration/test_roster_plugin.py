"""The csdl.gpu_lab.roster inventory (a class roster: one lab controller per student), through the real CLI.

Every run is ``ansible-inventory`` (or ``ansible-playbook``, ``ansible-doc``) from the venv, in
the repo (so ansible.cfg applies: the roster files a folder inventory
skips), with a throwaway HOME. Nothing here needs AWS: the plugin asks nothing over the network.
Keys are made with ssh-keygen, or built (a valid ed25519 key line) when hundreds are needed.
"""

from __future__ import annotations

import base64
import json
import os
import statistics
import struct
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.inventory.data import InventoryData
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import init_plugin_loader, inventory_loader

from tests.inventory_listing import hosts_of, plain

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CLASS = "dl2026"


# --- keys --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Real key pairs: name -> public key line; name + '_private' -> the private key file's text."""
    folder = tmp_path_factory.mktemp("keys")
    made: dict[str, str] = {}
    for name, kind in (("alice", "ed25519"), ("bob", "ed25519"), ("carol", "ecdsa"), ("dan", "rsa")):
        path = folder / name
        subprocess.run(
            ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", f"{name}@laptop", "-f", str(path)],
            check=True,
            capture_output=True,
        )
        made[name] = (folder / f"{name}.pub").read_text().strip()
        made[f"{name}_private"] = path.read_text()
    return made


def built_key(n: int, key_type: str = "ssh-ed25519") -> str:
    """A well-formed ed25519 public key line without ssh-keygen (for hundreds of students)."""
    blob = struct.pack(">I", len(key_type)) + key_type.encode() + struct.pack(">I", 32) + n.to_bytes(32, "big")
    return f"{key_type} {base64.b64encode(blob).decode()} student{n}@uni"


# --- running the CLI ---------------------------------------------------------------------


def cli_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ANSIBLE_"))}
    env.update({"HOME": str(home), "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"})
    return env


def run(command: str, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / command), *args],
        cwd=REPO,
        env=cli_env(home),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def csv_text(rows: list[dict[str, str]], columns: tuple[str, ...] = ("student", "public_key")) -> str:
    lines = [",".join(columns)]
    lines += [",".join(row.get(c, "") for c in columns) for row in rows]
    return "\n".join(lines) + "\n"


def roster_source(
    folder: Path, roster_text: str, *, roster: str = "students.csv", class_name: str = CLASS, **config: Any
) -> Path:
    """class.roster.yml and its roster file in folder; returns the source file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / roster).write_text(roster_text)
    source = folder / "class.roster.yml"
    source.write_text(
        yaml.safe_dump({"plugin": "csdl.gpu_lab.roster", "class": class_name, "roster": roster, **config})
    )
    return source


def listing_of(source: Path | str, home: Path, *extra: str) -> dict[str, Any]:
    done = run("ansible-inventory", "-i", str(source), "--list", *extra, home=home)
    assert done.returncode == 0, done.stderr
    assert "WARNING" not in done.stderr, done.stderr
    return plain(json.loads(done.stdout))


def failure(done: subprocess.CompletedProcess[str]) -> str:
    """What a staff member sees when a playbook meets the broken roster: the roster's
    message, then the playbook stops before any play acts (playbooks/labs_check.yml)."""
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    out = " ".join((done.stdout + done.stderr).split())
    assert "has no lab: the group `labs` is empty" in out, out[-3000:]
    assert "PLAY [Provision the labs" not in out, "a play ran on a broken roster"
    return out


def launch_on(source: Path, home: Path) -> subprocess.CompletedProcess[str]:
    # No AWS endpoint at all: the run must stop before it would ask AWS anything.
    return run("ansible-playbook", "-i", str(source), "launch.yml", home=home)


def roster_failure(tmp_path: Path, roster_text: str, **kwargs: Any) -> str:
    source = roster_source(tmp_path / "class", roster_text, **kwargs)
    return failure(launch_on(source, tmp_path / "home"))


# --- the inventory -----------------------------------------------------------------------


def test_csv_roster(keys: dict[str, str], tmp_path: Path) -> None:
    text = (
        "student,public_key,instance_type,region\n"
        "# the TA tries the bigger GPU in Europe\n"
        f"alice,{keys['alice']},g6.2xlarge,eu-west-1\n"
        "\n"
        f"bob,{keys['bob']},,\n"
        f"carol,{keys['carol']},,us-west-2\n"
        f"dan,{keys['dan']}\n"
    )
    listing = listing_of(roster_source(tmp_path, text), tmp_path / "home")
    hostvars = listing["_meta"]["hostvars"]
    labs = {f"{CLASS}-{s}" for s in ("alice", "bob", "carol", "dan")}
    assert set(hostvars) == labs
    assert hosts_of(listing, "labs") == labs
    assert hosts_of(listing, CLASS) == labs
    assert not hosts_of(listing, "ungrouped")

    alice = hostvars[f"{CLASS}-alice"]
    assert alice == {
        "gpu_lab_name": f"{CLASS}-alice",
        "gpu_lab_class": CLASS,
        "gpu_lab_student": "alice",
        "gpu_lab_student_public_key": keys["alice"],
        "gpu_lab_roster_row": 1,
        "gpu_lab_instance_type": "g6.2xlarge",
        "gpu_lab_region": "eu-west-1",
        "ansible_connection": "local",
        "ansible_python_interpreter": "{{ ansible_playbook_python }}",
    }
    # Rows count data rows only (comment and blank lines are not rows); overrides only when set.
    bob, carol, dan = (hostvars[f"{CLASS}-{s}"] for s in ("bob", "carol", "dan"))
    assert bob["gpu_lab_roster_row"] == 2 and carol["gpu_lab_roster_row"] == 3 and dan["gpu_lab_roster_row"] == 4
    assert "gpu_lab_instance_type" not in bob and "gpu_lab_region" not in bob
    assert carol["gpu_lab_region"] == "us-west-2" and "gpu_lab_instance_type" not in carol
    assert dan["gpu_lab_student_public_key"].startswith("ssh-rsa ")
    assert carol["gpu_lab_student_public_key"].startswith("ecdsa-sha2-nistp256 ")


@pytest.mark.parametrize("shape", ["list", "students"])
def test_yaml_roster(keys: dict[str, str], tmp_path: Path, shape: str) -> None:
    entries = [
        {"student": "alice", "public_key": keys["alice"] + "\n", "region": "eu-west-1"},
        {"student": "bob", "public_key": keys["bob"], "instance_type": "g5.xlarge"},
    ]
    data: Any = entries if shape == "list" else {"students": entries}
    source = roster_source(tmp_path, yaml.safe_dump(data), roster="nlp.students.yml", class_name="nlp-fall")
    listing = listing_of(source, tmp_path / "home")
    hostvars = listing["_meta"]["hostvars"]
    assert set(hostvars) == {"nlp-fall-alice", "nlp-fall-bob"}
    assert hosts_of(listing, "nlp_fall") == {"nlp-fall-alice", "nlp-fall-bob"}, "the class group is a safe name"
    assert hosts_of(listing, "labs") == {"nlp-fall-alice", "nlp-fall-bob"}
    alice, bob = hostvars["nlp-fall-alice"], hostvars["nlp-fall-bob"]
    assert alice["gpu_lab_student_public_key"] == keys["alice"], "one line, stripped"
    assert alice["gpu_lab_roster_row"] == 1 and bob["gpu_lab_roster_row"] == 2
    assert alice["gpu_lab_region"] == "eu-west-1" and "gpu_lab_instance_type" not in alice
    assert bob["gpu_lab_instance_type"] == "g5.xlarge" and "gpu_lab_region" not in bob
    assert alice["gpu_lab_class"] == "nlp-fall" and alice["gpu_lab_name"] == "nlp-fall-alice"


def test_folder_inventory_with_class_defaults(keys: dict[str, str], tmp_path: Path) -> None:
    """`-i inventories/<class>`: the roster files are skipped as inventories; host vars beat group_vars/all."""
    folder = tmp_path / "dl2026"
    text = csv_text(
        [{"student": "alice", "public_key": keys["alice"], "instance_type": "g6.2xlarge"},
         {"student": "bob", "public_key": keys["bob"]}],
        ("student", "public_key", "instance_type"),
    )  # fmt: skip
    roster_source(folder, text)
    (folder / "old.students.yml").write_text(yaml.safe_dump([{"student": "zed", "public_key": keys["bob"]}]))
    (folder / "group_vars" / "all").mkdir(parents=True)
    (folder / "group_vars" / "all" / "lab.yml").write_text(
        "gpu_lab_instance_type: g6.xlarge\ngpu_lab_region: us-east-1\n"
    )
    home = tmp_path / "home"
    listing = listing_of(folder, home)
    assert set(listing["_meta"]["hostvars"]) == {"dl2026-alice", "dl2026-bob"}

    def host(name: str) -> dict[str, Any]:
        done = run("ansible-inventory", "-i", str(folder), "--host", name, home=home)
        assert done.returncode == 0, done.stderr
        return plain(json.loads(done.stdout))

    assert host("dl2026-alice")["gpu_lab_instance_type"] == "g6.2xlarge", "the row's override wins"
    assert host("dl2026-bob")["gpu_lab_instance_type"] == "g6.xlarge", "the class default applies"
    assert host("dl2026-bob")["gpu_lab_region"] == "us-east-1"


def test_warns_about_a_roster_a_folder_inventory_would_read(keys: dict[str, str], tmp_path: Path) -> None:
    text = yaml.safe_dump([{"student": "alice", "public_key": keys["alice"]}])
    source = roster_source(tmp_path / "class", text, roster="roster_data.yml")
    done = run("ansible-inventory", "-i", str(source), "--list", home=tmp_path / "home")
    assert done.returncode == 0, done.stderr
    message = " ".join(done.stderr.split())
    assert "roster_data.yml is in the inventory folder" in message, message
    assert "name a YAML roster students.yml or <anything>.students.yml" in message, message


def test_compose_and_keyed_groups(keys: dict[str, str], tmp_path: Path) -> None:
    text = csv_text(
        [{"student": "alice", "public_key": keys["alice"], "region": "eu-west-1"},
         {"student": "bob", "public_key": keys["bob"]}],
        ("student", "public_key", "region"),
    )  # fmt: skip
    config = {
        "compose": {"lab_dir": "'/srv/' ~ gpu_lab_name"},
        "groups": {"europe": "gpu_lab_region | default('') is match('eu-')"},
        "keyed_groups": [{"key": "gpu_lab_student", "prefix": "student"}],
    }
    listing = listing_of(roster_source(tmp_path, text, **config), tmp_path / "home")
    assert listing["_meta"]["hostvars"]["dl2026-bob"]["lab_dir"] == "/srv/dl2026-bob"
    assert hosts_of(listing, "europe") == {"dl2026-alice"}
    assert hosts_of(listing, "student_alice") == {"dl2026-alice"}


def test_limit_and_roster_values_are_not_templated(keys: dict[str, str], tmp_path: Path) -> None:
    """`--limit` picks students; the interpreter template works, a student's key comment is never run."""
    evil = keys["carol"].rsplit(" ", 1)[0] + " {{ 6 * 7 }}"
    text = csv_text(
        [{"student": "alice", "public_key": keys["alice"]}, {"student": "bob", "public_key": keys["bob"]},
         {"student": "carol", "public_key": evil}]
    )  # fmt: skip
    source = roster_source(tmp_path / "class", text)
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        "- name: Each lab\n  hosts: labs\n  gather_facts: false\n  tasks:\n"
        "    - name: Show\n      ansible.builtin.debug:\n"
        "        msg: \"python={{ ansible_python_interpreter }} "
        "key={{ gpu_lab_student_public_key.split(' ', 2)[2] }}\"\n"
    )
    home = tmp_path / "home"

    limit = "dl2026-a*,dl2026-carol"
    done = run("ansible-playbook", "-i", str(source), str(playbook), "--list-hosts", "--limit", limit, home=home)
    assert done.returncode == 0, done.stderr
    listed = {line.strip() for line in done.stdout.splitlines() if line.strip().startswith(CLASS)}
    assert listed == {"dl2026-alice", "dl2026-carol"}

    done = run("ansible-playbook", "-i", str(source), str(playbook), "--limit", "dl2026-carol", home=home)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"python={sys.executable}" in done.stdout, done.stdout
    assert "key={{ 6 * 7 }}" in done.stdout and "42" not in done.stdout, done.stdout


def test_three_hundred_students(tmp_path: Path) -> None:
    text = csv_text([{"student": f"s{n:04d}", "public_key": built_key(n)} for n in range(300)])
    source = roster_source(tmp_path / "class", text)
    listing = listing_of(source, tmp_path / "home")
    assert len(listing["_meta"]["hostvars"]) == 300
    assert len(hosts_of(listing, "labs")) == 300
    assert listing["_meta"]["hostvars"]["dl2026-s0299"]["gpu_lab_roster_row"] == 300

    # The plugin's own share of the CLI's time, in this process: read, check, populate.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # configured already by another test module: fine
        init_plugin_loader([str(REPO / ".ansible" / "collections")])
    times = []
    for _ in range(5):
        plugin = inventory_loader.get("csdl.gpu_lab.roster")
        inventory = InventoryData()
        start = time.perf_counter()
        plugin.parse(inventory, DataLoader(), str(source))
        times.append(time.perf_counter() - start)
        assert len(inventory.hosts) == 300
    assert statistics.median(times) < 0.25, times


def test_ansible_doc_renders(tmp_path: Path) -> None:
    done = run("ansible-doc", "-t", "inventory", "csdl.gpu_lab.roster", home=tmp_path)
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    for expected in ("class", "roster", "public_key", "instance_type", "keyed_groups", "labs_check.yml"):
        assert expected in text
    assert "plugin: csdl.gpu_lab.roster" in text


# --- problems: all of them in one message, nothing else runs ------------------------------

KEY = built_key(1)
ROW_PROBLEMS = [
    ("uppercase id", {"student": "Alice"},
     "row 1 (line 2), student 'Alice': the student id must be lowercase letters, digits and '-', starting with a "
     "letter or digit (lowercase: 'alice')"),
    ("id with a dot", {"student": "a.b"}, "student 'a.b': the student id must be lowercase letters, digits and '-'"),
    ("id starting with -", {"student": "-ab"}, "student '-ab': the student id must be lowercase"),
    ("no id", {"student": ""}, "row 1 (line 2): no student id"),
    ("lab name too long", {"student": "a-very-long-student-identifier"},
     "the lab name 'dl2026-a-very-long-student-identifier' has 37 characters, at most 32 are allowed "
     "(a student id of at most 25 in class dl2026)"),
    ("no key", {"public_key": ""}, "row 1 (line 2), student 'alice': no public key"),
    ("not a key type", {"public_key": "AAAAC3NzaC1lZDI1NTE5AAAAIG alice"},
     "the public key starts with 'AAAAC3NzaC1lZDI1NTE5AAAAIG', not a key type (ssh-ed25519, ssh-rsa,"),
    ("dsa key", {"public_key": "ssh-dss AAAAB3NzaC1kc3MAAACBAP alice"}, "DSA keys (ssh-dss) are refused"),
    ("type only", {"public_key": "ssh-ed25519"}, "the ssh-ed25519 public key has no key data after its type"),
    ("bad base64", {"public_key": "ssh-ed25519 AAAA!!notbase64 alice"},
     "the data of the ssh-ed25519 public key is not valid base64"),
    ("truncated base64", {"public_key": KEY.split()[0] + " " + KEY.split()[1][:-5]},
     "the data of the ssh-ed25519 public key is not valid base64"),
    ("type mismatch", {"public_key": "ssh-rsa " + KEY.split()[1]},
     "the data of the public key is not a ssh-rsa key (the type at its start does not match)"),
    ("ssh2 format", {"public_key": '"---- BEGIN SSH2 PUBLIC KEY ----\nAAAA\n---- END SSH2 PUBLIC KEY ----"'},
     "SSH2 (RFC 4716) format, not OpenSSH's: convert it with `ssh-keygen -i -f key.pub`"),
    ("instance type form", {"instance_type": "G6.XLarge"},
     "the instance type 'G6.XLarge' is not of the form g6.xlarge"),
    ("instance type without size", {"instance_type": "g6"}, "the instance type 'g6' is not of the form g6.xlarge"),
    ("region form", {"region": "us-east-1a"}, "the region 'us-east-1a' is not of the form us-east-1"),
    ("region form 2", {"region": "useast1"}, "the region 'useast1' is not of the form us-east-1"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "message"), [p[1:] for p in ROW_PROBLEMS], ids=[p[0] for p in ROW_PROBLEMS])
def test_row_problem(tmp_path: Path, change: dict[str, str], message: str) -> None:
    row = {"student": "alice", "public_key": KEY, "instance_type": "", "region": "", **change}
    message_text = roster_failure(tmp_path, csv_text([row], ("student", "public_key", "instance_type", "region")))
    assert "has 1 problem; fix it and run again (no lab was touched): - row 1 (line 2)" in message_text, message_text
    assert message in message_text, message_text
    assert "students.csv of class dl2026" in message_text, "the error names the file"


FILE_PROBLEMS = [
    ("missing file", None, "students.csv", "the roster file does not exist: check the roster option"),
    ("empty file", "", "students.csv", "the roster is empty: it needs a header row"),
    ("header only", "student,public_key\n# nobody yet\n", "students.csv", "the roster is empty: it lists no student"),
    ("unknown column", "student,public_key,instance-type\n", "students.csv",
     "the header (line 1) has the unknown column(s) 'instance-type': the columns are student, public_key, "
     "instance_type, region"),
    ("missing column", "student,instance_type\nalice,g6.xlarge\n", "students.csv",
     "the header (line 1) has no public_key column"),
    ("missing columns", "name\nalice\n", "students.csv", "the header (line 1) has the unknown column(s) 'name'"),
    ("repeated column", "student,public_key,student\n", "students.csv", "has the column(s) student more than once"),
    ("empty yaml", "[]\n", "s.students.yml", "the roster is empty: it lists no student"),
    ("yaml not a list", "alice: x\n", "s.students.yml", "a YAML roster is a list of students"),
    ("yaml unknown key", f"- student: alice\n  publickey: {KEY}\n", "s.students.yml",
     "entry 1: the unknown key(s) 'publickey'"),
    ("yaml number id", f"- student: 0042\n  public_key: {KEY}\n", "s.students.yml",
     "entry 1: student must be text, not int: quote it"),
    ("other extension", "x", "students.txt", "the roster file must be .csv, .yml or .yaml"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "roster", "message"), [p[1:] for p in FILE_PROBLEMS], ids=[p[0] for p in FILE_PROBLEMS]
)
def test_file_problem(tmp_path: Path, text: str | None, roster: str, message: str) -> None:
    source = roster_source(tmp_path / "class", text or "", roster=roster)
    if text is None:
        (tmp_path / "class" / roster).unlink()
    message_text = failure(launch_on(source, tmp_path / "home"))
    assert f"The roster {tmp_path / 'class' / roster} of class dl2026 (from {source})" in message_text, message_text
    assert message in message_text, message_text


@pytest.mark.parametrize(
    ("class_name", "message"),
    [
        ("DL2026", "The class name 'DL2026' in"),
        ("a", "The class name 'a' in"),
        ("dl2026-", "The class name 'dl2026-' in"),
        ("x" * 21, "use 2 to 20 lowercase letters"),
        ("labs", "The class name 'labs' in"),
    ],
)
def test_bad_class_name(tmp_path: Path, class_name: str, message: str) -> None:
    text = csv_text([{"student": "alice", "public_key": KEY}])
    message_text = roster_failure(tmp_path, text, class_name=class_name)
    assert message in message_text, message_text


def test_every_problem_in_one_message(keys: dict[str, str], tmp_path: Path) -> None:
    text = (
        "Student , Public_Key,region\n"  # header names: any case, spaces around
        f"alice,{keys['alice']},\n"
        f"Bob,{keys['bob']},\n"
        "# carol's key is wrong\n"
        "carol,ssh-ed25519 AAA,us-east-1a\n"
        f"alice,{keys['dan']},\n"
        f"dan,{keys['dan']},eu-west-1,extra\n"
    )
    message = roster_failure(tmp_path, text)
    assert "has 5 problems; fix them all and run again (no lab was touched):" in message, message
    expected = [
        "- row 2 (line 3), student 'Bob': the student id must be lowercase",
        "- row 3 (line 5), student 'carol': the data of the ssh-ed25519 public key is not valid base64",
        "- row 3 (line 5), student 'carol': the region 'us-east-1a' is not of the form us-east-1",
        "- row 4 (line 6), student 'alice': the student is listed twice (first in row 1 (line 2))",
        "- row 5 (line 7): 4 fields, but the header has 3 columns",
    ]
    positions = [message.find(e) for e in expected]
    assert all(p >= 0 for p in positions), (expected, message)
    assert positions == sorted(positions), "in row order"


@pytest.mark.parametrize("how", ["csv unquoted", "csv quoted", "yaml block"])
def test_private_key_pasted(keys: dict[str, str], tmp_path: Path, how: str) -> None:
    private = keys["bob_private"].strip()
    roster = "students.csv"
    if how == "csv unquoted":  # every line of the key becomes a CSV row: one problem all the same
        text = f"student,public_key\nalice,{keys['alice']}\nbob,{private}\ncarol,{keys['carol']}\n"
    elif how == "csv quoted":
        text = f'student,public_key\nalice,{keys["alice"]}\nbob,"{private}"\ncarol,{keys["carol"]}\n'
    else:
        roster = "x.students.yml"
        text = yaml.safe_dump([{"student": "alice", "public_key": keys["alice"]},
                               {"student": "bob", "public_key": private + "\n"},
                               {"student": "carol", "public_key": keys["carol"]}])  # fmt: skip
    message = roster_failure(tmp_path, text, roster=roster)
    assert "has 1 problem" in message, message
    assert (
        "student 'bob': this is a PRIVATE key, not the public one: the student must send the .pub file "
        "(for example ~/.ssh/id_ed25519.pub) instead, and since the private key has left their machine it must "
        "be considered leaked" in message
    ), message
    body = private.splitlines()[1]
    assert body not in message, "the private key is never echoed"
