# Copyright: gpu_lab developers
# MIT License
"""A class roster as an inventory: one lab controller host per student, read from a CSV or YAML file."""

from __future__ import annotations

DOCUMENTATION = r"""
name: roster
short_description: A whole class of gpu_lab labs, one per student of a roster file
description:
  - Reads a class roster (a CSV or YAML file of students and their SSH public keys) and makes one
    host per student, named C(<class>-<student>), which is also the name of the student's lab.
  - These hosts are lab controllers, not the GPU servers. Each runs on this machine
    (C(ansible_connection=local)) and drives one lab, so the playbooks act on every lab of a class
    at once, with forks in parallel, and C(--limit) picks students.
  - The inventory source is a YAML file whose name ends in C(roster.yml) or C(roster.yaml),
    for example C(inventories/dl2026/class.roster.yml).
  - The roster is checked as a whole before any host is made. Every problem (a student id that is
    not valid, a lab name that is too long, a student listed twice, a public key that does not
    parse or a private key pasted in its place, an instance type or region of the wrong form, an
    unknown column) is reported in one error that names the file and the row of each, so the file
    can be fixed in one go. The run then has no lab, and every gpu_lab playbook stops before any
    play acts (C(playbooks/labs_check.yml)), under this error, and nothing is created.
  - "Groups: every host is in C(labs) (the group the playbooks target) and in the group named
    after the class (C(-) made C(_), for example C(dl2026))."
  - "Host variables: C(gpu_lab_name) (C(<class>-<student>)), C(gpu_lab_class), C(gpu_lab_student),
    C(gpu_lab_student_public_key) (the key line, stripped), C(gpu_lab_roster_row) (the 1-based row of
    the student among the data rows of a CSV roster, or the position in a YAML roster's list),
    C(ansible_connection=local) and C(ansible_python_interpreter) (the Python that runs Ansible);
    C(gpu_lab_instance_type) and C(gpu_lab_region) only for the students whose row sets them, so
    the class defaults of C(group_vars/all) apply to the others. All usable in O(compose),
    O(groups) and O(keyed_groups)."
  - Nothing is asked over the network; the roster file is the only input.
author:
  - gpu_lab developers (@csdl)
version_added: 0.3.0
notes:
  - "A CSV roster has a header row. Its columns are C(student) and C(public_key) (both required),
    and C(instance_type) and C(region) (optional, per-student overrides); another column is an error
    that names it, so a misspelt header is not silently ignored. Header names are matched without
    regard to case or surrounding spaces. Blank lines and lines whose first character is C(#)
    are skipped. The file is read as UTF-8 (a byte order mark, as Excel writes it, is fine)."
  - "A YAML roster (C(.yml) or C(.yaml)) is a list of mappings with the same keys, or a mapping whose
    key C(students) holds that list. Student ids must be YAML strings: quote one that looks like a
    number (C(\"0042\"))."
  - "Student ids are lowercase letters, digits and C(-), starting with a letter or digit; the lab name
    C(<class>-<student>) is at most 32 characters, because it names AWS resources
    (C(<lab>-server), C(<lab>-ssh)) and local files."
  - "Public keys are one OpenSSH public key line (C(ssh-ed25519 AAAA... comment)), of type
    C(ssh-ed25519), C(ssh-rsa), C(ecdsa-sha2-nistp256), C(ecdsa-sha2-nistp384), C(ecdsa-sha2-nistp521),
    C(sk-ssh-ed25519@openssh.com) or C(sk-ecdsa-sha2-nistp256@openssh.com), as in the student's
    C(~/.ssh/id_ed25519.pub)."
  - "When the inventory is a folder (C(-i inventories/dl2026)), Ansible also offers every other file in
    it to the inventory plugins. gpu_lab's ansible.cfg makes it skip C(.csv) files and YAML files named
    C(students.yml) or C(<anything>.students.yml); name a YAML roster that way, or keep it outside
    the folder. The plugin warns when the roster sits where Ansible would read it as an inventory."
  - Values from the roster are never templated (a key comment such as C({{ ... }}) stays text).
extends_documentation_fragment:
  - constructed
options:
  plugin:
    description: The name of this plugin; it makes the file an inventory source of this plugin.
    required: true
    type: str
    choices: [csdl.gpu_lab.roster]
  class:
    description:
      - The class name, the first part of every lab name (C(<class>-<student>)).
      - Lowercase letters, digits and C(-), 2 to 20 characters, starting with a letter and not ending
        with C(-); not C(all), C(ungrouped), C(labs), C(gpu_lab), C(stopped) or C(workstation),
        which are groups already.
    required: true
    type: str
  roster:
    description:
      - The roster file, C(.csv), C(.yml) or C(.yaml).
      - A relative path is relative to the folder of this inventory source file; C(~) is expanded.
    required: true
    type: str
"""

EXAMPLES = r"""
# inventories/dl2026/class.roster.yml: the class dl2026, its students in students.csv beside it
plugin: csdl.gpu_lab.roster
class: dl2026
roster: students.csv

# inventories/dl2026/students.csv:
#   student,public_key,instance_type
#   # the TA tries the bigger GPU
#   alice,ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI... alice@laptop,g6.2xlarge
#   bob,ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI... bob@desktop,

---
# a YAML roster, and a group of the students whose lab runs in Europe
plugin: csdl.gpu_lab.roster
class: nlp-fall
roster: nlp.students.yml
groups:
  europe: gpu_lab_region | default('') is match('eu-')

# inventories/nlp-fall/nlp.students.yml:
#   students:
#     - student: carol
#       public_key: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI... carol@uni
#       region: eu-west-1
#     - student: dan
#       public_key: ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAI... dan@uni
"""

import base64
import binascii
import csv
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ansible import constants as C
from ansible.errors import AnsibleParserError
from ansible.inventory.group import to_safe_group_name
from ansible.plugins.inventory import BaseInventoryPlugin, Constructable
from ansible.template import trust_as_template

CLASS_NAME = re.compile(r"[a-z][a-z0-9-]{0,18}[a-z0-9]")
STUDENT_ID = re.compile(r"[a-z0-9][a-z0-9-]*")
INSTANCE_TYPE = re.compile(r"[a-z][a-z0-9-]*\.[a-z0-9]+")
REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d")
MAX_LAB_NAME = 32  # the lab name names AWS resources (<lab>-server) and files: keep it short
LABS_GROUP = "labs"
RESERVED_GROUPS = frozenset({"all", "ungrouped", LABS_GROUP, "gpu_lab", "stopped", "workstation"})

REQUIRED_COLUMNS = ("student", "public_key")
OPTIONAL_COLUMNS = ("instance_type", "region")
COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
# Row settings and the lab settings they override (host vars win over group_vars/all).
OVERRIDES = {"instance_type": "gpu_lab_instance_type", "region": "gpu_lab_region"}

KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)
PRIVATE_KEY_BEGIN = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
PRIVATE_KEY_END = re.compile(r"-----END [A-Z0-9 ]*PRIVATE KEY-----")
PRIVATE_KEY_LEAKED = (
    "this is a PRIVATE key, not the public one: the student must send the .pub file "
    "(for example ~/.ssh/id_ed25519.pub) instead, and since the private key has left their machine it "
    "must be considered leaked: they should make a new key pair (ssh-keygen -t ed25519) and delete this "
    "copy of the old private key wherever it was sent"
)
# The name Ansible would read as an inventory itself when the folder is the inventory.
YAML_ROSTER_HINT = "name a YAML roster students.yml or <anything>.students.yml"


@dataclass
class Student:
    """One roster row, as read; checked and turned into a host by the plugin."""

    row: int  # 1-based among the data rows (CSV) or the list's entries (YAML)
    where: str  # how to point at it in an error: "row 3 (line 5)"
    values: dict[str, Any] = field(default_factory=dict)
    private_key_pasted: bool = False


Problem = tuple[int, str]  # (row, text): reported in row order


class RosterError(Exception):
    """A problem that stops reading the roster at all (no file, no header...)."""


class InventoryModule(BaseInventoryPlugin, Constructable):
    NAME = "csdl.gpu_lab.roster"

    def verify_file(self, path: str) -> bool:
        """Only roster sources: any other YAML belongs to another plugin."""
        return super().verify_file(path) and path.endswith(("roster.yml", "roster.yaml"))

    def parse(self, inventory: Any, loader: Any, path: str, cache: bool = True) -> None:
        super().parse(inventory, loader, path, cache=cache)
        self._read_config_data(path)
        class_name = self._class_name(path)
        roster = self._roster_path(path)
        self._warn_if_read_as_inventory(path, roster)

        try:
            students, problems = read_roster(roster)
        except RosterError as e:
            raise AnsibleParserError(f"The roster {roster} of class {class_name} (from {path}): {e}") from None
        problems = [text for _key, text in sorted(problems + check_students(class_name, students), key=lambda p: p[0])]
        if problems:
            count = "1 problem" if len(problems) == 1 else f"{len(problems)} problems"
            raise AnsibleParserError(
                f"The roster {roster} of class {class_name} (from {path}) has {count}; fix "
                f"{'it' if len(problems) == 1 else 'them all'} and run again (no lab was touched):\n"
                + "\n".join(f"  - {problem}" for problem in problems)
            )
        self._populate(class_name, students)

    # --- options ------------------------------------------------------------------------

    def _class_name(self, path: str) -> str:
        class_name = str(self.get_option("class") or "").strip()
        if not CLASS_NAME.fullmatch(class_name):
            raise AnsibleParserError(
                f"The class name {class_name!r} in {path} is not valid: use 2 to 20 lowercase letters, digits "
                "and '-', starting with a letter and ending with a letter or digit (for example dl2026)."
            )
        if class_name in RESERVED_GROUPS or class_group_name(class_name) in RESERVED_GROUPS:
            raise AnsibleParserError(
                f"The class name {class_name!r} in {path} is the name of a group gpu_lab uses already "
                f"({', '.join(sorted(RESERVED_GROUPS))}): pick another."
            )
        return class_name

    def _roster_path(self, path: str) -> str:
        roster = str(self.get_option("roster") or "").strip()
        if not roster:
            raise AnsibleParserError(f"{path} names no roster file: add `roster: students.csv`.")
        roster = os.path.expanduser(roster)
        if not os.path.isabs(roster):
            roster = os.path.join(os.path.dirname(os.path.abspath(path)), roster)
        return os.path.normpath(roster)

    def _warn_if_read_as_inventory(self, path: str, roster: str) -> None:
        """A roster inside the inventory folder that Ansible does not skip breaks `-i <folder>`."""
        folder = os.path.dirname(os.path.abspath(path))
        if os.path.commonpath([folder, roster]) != folder:
            return
        name = os.path.basename(roster)
        ignored = any(name.endswith(ext) for ext in C.INVENTORY_IGNORE_EXTS) or any(
            re.search(pattern, name) for pattern in C.INVENTORY_IGNORE_PATTERNS
        )
        if not ignored:
            self.display.warning(
                f"The roster {roster} is in the inventory folder {folder}, where `-i {folder}` would also read it "
                f"as an inventory and fail: {YAML_ROSTER_HINT} (gpu_lab's ansible.cfg skips those and .csv files), "
                "or move it out of the folder."
            )

    # --- inventory ----------------------------------------------------------------------

    def _populate(self, class_name: str, students: list[Student]) -> None:
        inventory = self.inventory
        class_group = class_group_name(class_name)
        inventory.add_group(LABS_GROUP)
        inventory.add_group(class_group)

        strict = self.get_option("strict")
        compose = self.get_option("compose")
        groups = self.get_option("groups")
        keyed_groups = self.get_option("keyed_groups")
        # The one value meant as a template: the roster's own values stay untrusted text.
        interpreter = trust_as_template("{{ ansible_playbook_python }}")

        for student in students:
            host_vars = make_host_vars(class_name, student)
            name = host_vars["gpu_lab_name"]
            inventory.add_host(name, group=LABS_GROUP)
            inventory.add_child(class_group, name)
            for var, value in host_vars.items():
                inventory.set_variable(name, var, value)
            inventory.set_variable(name, "ansible_python_interpreter", interpreter)

            self._set_composite_vars(compose, host_vars, name, strict=strict)
            self._add_host_to_composed_groups(groups, host_vars, name, strict=strict)
            self._add_host_to_keyed_groups(keyed_groups, host_vars, name, strict=strict)


# --- reading and checking (pure functions: no Ansible state) ------------------------------


def class_group_name(class_name: str) -> str:
    return to_safe_group_name(class_name, force=True, silent=True)


def make_host_vars(class_name: str, student: Student) -> dict[str, Any]:
    values = student.values
    host_vars: dict[str, Any] = {
        "gpu_lab_name": f"{class_name}-{values['student']}",
        "gpu_lab_class": class_name,
        "gpu_lab_student": values["student"],
        "gpu_lab_student_public_key": values["public_key"],
        "gpu_lab_roster_row": student.row,
        "ansible_connection": "local",
    }
    for column, var in OVERRIDES.items():
        if values.get(column):
            host_vars[var] = values[column]
    return host_vars


def read_roster(path: str) -> tuple[list[Student], list[Problem]]:
    """The students of a roster file, and the problems of its rows' shape (not of their values)."""
    extension = os.path.splitext(path)[1].lower()
    if extension not in (".csv", ".yml", ".yaml"):
        raise RosterError("the roster file must be .csv, .yml or .yaml.")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            text = f.read()
    except FileNotFoundError:
        raise RosterError("the roster file does not exist: check the roster option (relative to that file).") from None
    except IsADirectoryError:
        raise RosterError("the roster is a folder, not a file.") from None
    except UnicodeDecodeError as e:
        raise RosterError(
            f"the roster file is not UTF-8 text ({e.reason} at byte {e.start}): save it as UTF-8."
        ) from None
    except OSError as e:
        raise RosterError(f"the roster file cannot be read ({e.strerror}).") from None
    students, problems = read_csv(text) if extension == ".csv" else read_yaml(text)
    if not students and not problems:
        raise RosterError("the roster is empty: it lists no student; add one per student.")
    return students, problems


class _Lines:
    """The lines of a CSV file without blank and # lines, remembering the number of each one read."""

    def __init__(self, text: str) -> None:
        self._lines = enumerate(text.splitlines(keepends=True), start=1)
        self.read: list[int] = []

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        for number, line in self._lines:
            if line.strip() and not line.startswith("#"):
                self.read.append(number)
                return line
        raise StopIteration


def read_csv(text: str) -> tuple[list[Student], list[Problem]]:
    lines = _Lines(text)
    reader = csv.reader(lines, strict=True)
    try:
        header = next(reader, None)
    except csv.Error as e:
        raise RosterError(f"the header row cannot be read as CSV ({e}).") from None
    if header is None:
        raise RosterError("the roster is empty: it needs a header row (student,public_key) and one row per student.")
    columns = [name.strip().lower() for name in header]
    check_header(columns, f"line {lines.read[0]}")

    students: list[Student] = []
    problems: list[Problem] = []
    in_pasted_key = False  # the lines of a private key pasted unquoted, one "row" each
    while True:
        first = len(lines.read)
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            line = lines.read[first] if first < len(lines.read) else "?"
            problems.append((len(students) + 1, f"line {line}: not valid CSV ({e}); nothing after it was read"))
            break
        if in_pasted_key:
            # Reported once, with the row where the key begins.
            in_pasted_key = not any(PRIVATE_KEY_END.search(cell) for cell in fields)
            continue
        row = len(students) + 1
        where = f"row {row} (line {lines.read[first]})"
        if any(PRIVATE_KEY_BEGIN.search(cell) for cell in fields):
            in_pasted_key = not any(PRIVATE_KEY_END.search(cell) for cell in fields)
            student = fields[0].strip() if fields and not PRIVATE_KEY_BEGIN.search(fields[0]) else None
            students.append(Student(row, where, {"student": student}, private_key_pasted=True))
            continue
        if len(fields) > len(columns):
            problems.append(
                (row, f"{where}: {len(fields)} fields, but the header has {len(columns)} columns (quote a value "
                 "that holds a comma)")
            )  # fmt: skip
        values = {column: cell.strip() for column, cell in zip(columns, fields, strict=False)}
        students.append(Student(row, where, {c: values.get(c) or None for c in COLUMNS}))
    return students, problems


def check_header(columns: list[str], where: str) -> None:
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown:
        raise RosterError(
            f"the header ({where}) has the unknown column(s) {', '.join(repr(c) for c in unknown)}: "
            f"the columns are {', '.join(COLUMNS)} (a misspelt one would otherwise be ignored)."
        )
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise RosterError(f"the header ({where}) has the column(s) {', '.join(repeated)} more than once.")
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise RosterError(
            f"the header ({where}) has no {' and no '.join(missing)} column: the first row names the columns, "
            f"at least {','.join(REQUIRED_COLUMNS)}."
        )


def read_yaml(text: str) -> tuple[list[Student], list[Problem]]:
    import yaml  # a dependency of ansible-core; only YAML rosters need it

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise RosterError(f"the roster is not valid YAML: {e}") from None
    if isinstance(data, dict) and set(data) == {"students"}:
        data = data["students"]
    if data is None or data == []:
        raise RosterError("the roster is empty: it lists no student; add one entry per student.")
    if not isinstance(data, list):
        raise RosterError(
            "a YAML roster is a list of students (- student: ..., public_key: ...), "
            "or a mapping whose only key, students, holds that list."
        )
    students: list[Student] = []
    problems: list[Problem] = []
    for row, entry in enumerate(data, start=1):
        where = f"entry {row}"
        if not isinstance(entry, dict):
            problems.append((row, f"{where}: not a mapping of {', '.join(COLUMNS)}"))
            continue
        unknown = [str(k) for k in entry if k not in COLUMNS]
        if unknown:
            problems.append(
                (row, f"{where}: the unknown key(s) {', '.join(repr(k) for k in unknown)} (the keys are "
                 f"{', '.join(COLUMNS)}; a misspelt one would otherwise be ignored)")
            )  # fmt: skip
        values: dict[str, Any] = {}
        for column in COLUMNS:
            value = entry.get(column)
            if value is not None and not isinstance(value, str):
                problems.append((row, f"{where}: {column} must be text, not {type(value).__name__}: quote it"))
                value = None
            values[column] = value.strip() if value and value.strip() else None
        students.append(Student(row, where, values))
    return students, problems


def check_students(class_name: str, students: list[Student]) -> list[Problem]:
    """Every problem of the rows' values."""
    problems: list[Problem] = []
    first_seen: dict[str, str] = {}
    for student in students:
        values = student.values
        sid = values.get("student")
        who = f"{student.where}, student {sid!r}" if sid else student.where

        def problem(text: str, row: int = student.row, who: str = who) -> None:
            problems.append((row, f"{who}: {text}"))

        if not sid:
            problem("no student id")
        elif not STUDENT_ID.fullmatch(sid):
            lower = sid.lower()
            hint = f" (lowercase: {lower!r})" if STUDENT_ID.fullmatch(lower) else ""
            problem(f"the student id must be lowercase letters, digits and '-', starting with a letter or digit{hint}")
        else:
            lab = f"{class_name}-{sid}"
            if len(lab) > MAX_LAB_NAME:
                problem(
                    f"the lab name {lab!r} has {len(lab)} characters, at most {MAX_LAB_NAME} are allowed "
                    f"(a student id of at most {MAX_LAB_NAME - len(class_name) - 1} in class {class_name})"
                )
            if sid in first_seen:
                problem(f"the student is listed twice (first in {first_seen[sid]})")
            else:
                first_seen[sid] = student.where

        key = values.get("public_key")
        if student.private_key_pasted:
            problem(PRIVATE_KEY_LEAKED)
        elif not key:
            problem("no public key")
        elif key_problem := public_key_problem(key):
            problem(key_problem)

        instance_type = values.get("instance_type")
        if instance_type and not INSTANCE_TYPE.fullmatch(instance_type):
            problem(f"the instance type {instance_type!r} is not of the form g6.xlarge (family.size, lowercase)")
        region = values.get("region")
        if region and not REGION.fullmatch(region):
            problem(f"the region {region!r} is not of the form us-east-1 (a region, not a zone such as us-east-1a)")
    return problems


def public_key_problem(key: str) -> str | None:
    """Why a text is not one OpenSSH public key line, or None. Never quotes the key itself."""
    if PRIVATE_KEY_BEGIN.search(key) or key.startswith("PuTTY-User-Key-File"):
        return PRIVATE_KEY_LEAKED
    if key.startswith("---- BEGIN SSH2 PUBLIC KEY ----"):
        return (
            "the public key is in the SSH2 (RFC 4716) format, not OpenSSH's: convert it with "
            "`ssh-keygen -i -f key.pub` and send the one line that prints"
        )
    if "\n" in key or "\r" in key:
        return "the public key must be one line (type, base64 data, optional comment)"
    parts = key.split()
    key_type = parts[0]
    if key_type not in KEY_TYPES:
        if key_type == "ssh-dss":
            return "DSA keys (ssh-dss) are refused by current OpenSSH: make an ed25519 key (ssh-keygen -t ed25519)"
        shown = key_type if len(key_type) <= 40 else key_type[:40] + "..."
        return (
            f"the public key starts with {shown!r}, not a key type ({', '.join(KEY_TYPES)}): "
            "send the whole line of the .pub file"
        )
    if len(parts) < 2:
        return f"the {key_type} public key has no key data after its type: send the whole line of the .pub file"
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        return f"the data of the {key_type} public key is not valid base64 (cut short or mangled when copied?)"
    expected = key_type.encode()
    if (
        len(blob) < 4 + len(expected)
        or struct.unpack(">I", blob[:4])[0] != len(expected)
        or (blob[4 : 4 + len(expected)] != expected)
    ):
        return (
            f"the data of the public key is not a {key_type} key (the type at its start does not match): "
            "send the .pub file's line unchanged"
        )
    return None
