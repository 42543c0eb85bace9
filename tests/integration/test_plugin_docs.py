"""Every plugin and role of the collection renders in ``ansible-doc``, the way Galaxy and the
docs site read them: a description, an author in ``Name (@handle)`` form, examples, and a
RETURN whose entries each have a sample and say what a dict or a list of dicts contains.
Markup must point at something real: ``O(x)`` at an option of the plugin (or of another
plugin, ``O(fqcn#type:x)``), ``RV(x)`` at a return value.

One ``ansible-doc --json`` call per plugin type for all its names (a few seconds in all).
"""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.playbook import BIN, REPO
from tests.unit.collection import load

COLLECTION = "csdl.gpu_lab"
TYPES = ("module", "filter", "test", "lookup", "inventory", "role")
AUTHOR = re.compile(r"^[^()]+ \(@[\w-]+\)$")
MARKUP = re.compile(r"\b(O|RV)\(([^)]+)\)")


def ansible_doc(*args: str) -> Any:
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(REPO / ".ansible" / "collections"),
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_DEPRECATION_WARNINGS": "0"}
    done = subprocess.run([str(BIN / "ansible-doc"), "--json", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL, check=False)
    assert done.returncode == 0, done.stderr
    assert "Missing documentation" not in done.stderr, done.stderr
    found = json.loads(done.stdout)
    if args[:2] != ("-t", "role"):  # a role's listing has no description of its own, its entry points do
        assert "UNDOCUMENTED" not in done.stdout, done.stdout
    return found


@pytest.fixture(scope="module")
def docs() -> dict[str, dict[str, Any]]:
    """{plugin type: {fqcn: ansible-doc's JSON}} for every plugin of the collection."""
    if not (REPO / ".ansible" / "collections" / "ansible_collections" / "csdl" / "gpu_lab").exists():
        pytest.skip("the csdl.gpu_lab collection link is missing: run scripts/bootstrap.sh")
    found: dict[str, dict[str, Any]] = {}
    for kind in TYPES:
        names = sorted(ansible_doc("-t", kind, "-l", COLLECTION))
        found[kind] = ansible_doc("-t", kind, *names) if names else {}
    return found


def expected_names() -> dict[str, set[str]]:
    """What the files under plugins/ and roles/ say the collection has."""
    plugins = REPO / "plugins"
    names = {kind: {f"{COLLECTION}.{p.stem}" for p in (plugins / kind).glob("*.py") if p.stem != "__init__"}
             for kind in ("module", "lookup", "inventory")}
    names["module"] = {f"{COLLECTION}.{p.stem}" for p in (plugins / "modules").glob("*.py") if p.stem != "__init__"}
    names["role"] = {f"{COLLECTION}.{p.name}" for p in (REPO / "roles").iterdir() if (p / "meta").is_dir()}
    for kind in ("filter", "test"):
        names[kind] = set()
        for source in (plugins / kind).glob("*.py"):
            # each filter/test name a plugin file gives: the keys of filters()/tests()
            block = source.read_text().split("def filters" if kind == "filter" else "def tests", 1)[-1]
            names[kind] |= {f"{COLLECTION}.{n}" for n in re.findall(r'"([a-z0-9_]+)":', block)}
    return names


def entries(returns: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    for key, spec in (returns or {}).items():
        yield f"{path}{key}", spec
        yield from entries(spec.get("contains") or {}, f"{path}{key}.")


def texts(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from texts(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from texts(v)


def option_names(options: dict[str, Any], path: str = "") -> set[str]:
    names = set()
    for key, spec in (options or {}).items():
        names.add(f"{path}{key}")
        names |= option_names(spec.get("suboptions") or {}, f"{path}{key}.")
    return names


def plugins(docs: dict[str, dict[str, Any]]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for kind, found in docs.items():
        if kind == "role":
            for role, doc in found.items():
                for entry_point, spec in doc["entry_points"].items():
                    yield kind, f"{role} {entry_point}", {"doc": spec}
        else:
            for name, doc in found.items():
                yield kind, name, doc


def test_every_plugin_and_role_is_listed(docs: dict[str, dict[str, Any]]) -> None:
    expected = expected_names()
    for kind in TYPES:
        assert set(docs[kind]) == expected[kind], kind


def test_every_plugin_and_role_has_a_description_author_and_examples(docs: dict[str, dict[str, Any]]) -> None:
    problems = []
    for kind, name, doc in plugins(docs):
        spec = doc["doc"]
        if not spec.get("short_description") or not spec.get("description"):
            problems.append(f"{kind} {name}: no short_description or description")
        authors = spec.get("author") or []
        for author in [authors] if isinstance(authors, str) else authors:
            if not AUTHOR.match(author):
                problems.append(f"{kind} {name}: author {author!r} is not 'Name (@handle)'")
        if not authors:
            problems.append(f"{kind} {name}: no author")
        if kind != "role" and not (doc.get("examples") or "").strip():
            problems.append(f"{kind} {name}: no EXAMPLES")
        if kind in ("filter", "test") and spec.get("name") != name.rsplit(".", 1)[1]:
            # a file with many filters: each needs its own <name>.yml, else all show the file's doc
            problems.append(f"{kind} {name}: documented as {spec.get('name')!r}")
    assert not problems, "\n".join(problems)


def test_every_return_value_has_a_sample_and_says_what_it_contains(docs: dict[str, dict[str, Any]]) -> None:
    problems = []
    for kind, name, doc in plugins(docs):
        returns = doc.get("return") or {}
        if kind in ("module", "filter", "test", "lookup") and not returns:
            problems.append(f"{kind} {name}: no RETURN")
        for key, spec in returns.items():
            if "sample" not in spec:
                problems.append(f"{kind} {name}: RETURN {key} has no sample")
        for key, spec in entries(returns):
            if not spec.get("description"):
                problems.append(f"{kind} {name}: RETURN {key} has no description")
            kind_of = spec.get("type")
            if kind_of == "list" and not spec.get("elements"):
                problems.append(f"{kind} {name}: RETURN {key} is a list without elements")
            # a dict inside another is often a map by name (tags, prices by type): contains optional there
            dict_shaped = ((kind_of == "dict" and "." not in key)
                           or (kind_of == "list" and spec.get("elements") == "dict"))
            if dict_shaped and not spec.get("contains"):
                problems.append(f"{kind} {name}: RETURN {key} is a {kind_of} without contains (what its dicts hold)")
    assert not problems, "\n".join(problems)


def test_markup_points_at_real_options_and_return_values(docs: dict[str, dict[str, Any]]) -> None:
    problems = []
    for kind, name, doc in plugins(docs):
        spec = doc["doc"]
        options = option_names(spec.get("options") or {})
        returns = {key for key, _ in entries(doc.get("return") or {})}
        for text in texts({"doc": spec, "return": doc.get("return") or {}}):
            for markup, target in MARKUP.findall(text):
                if "#" in target:  # another plugin's option or return value
                    continue
                ref = re.split(r"[=\[]", target, maxsplit=1)[0]
                if markup == "O" and ref not in options:
                    problems.append(f"{kind} {name}: O({target}) is not an option")
                if markup == "RV" and ref not in returns:
                    problems.append(f"{kind} {name}: RV({target}) is not a return value")
    assert not problems, "\n".join(problems)


def test_the_docs_are_read_from_the_files_checked(docs: dict[str, dict[str, Any]]) -> None:
    # the link points at this checkout: the docs checked are the ones in this tree
    link = REPO / ".ansible" / "collections" / "ansible_collections" / "csdl" / "gpu_lab"
    assert Path(os.path.realpath(link)) == REPO.resolve()


def test_filter_and_test_options_are_the_functions_parameters(docs: dict[str, dict[str, Any]]) -> None:
    # A doc file is written by hand beside the code: its options must be what the function takes
    # (by name; in order as positional says, ansible-doc --json sorts the options), required exactly
    # where the function has no default.
    problems = []
    for kind in ("filter", "test"):
        for source in sorted((REPO / "plugins" / kind).glob("*.py")):
            module = load(f"{kind}.{source.stem}")  # as Ansible imports it (ansible_collections.csdl...)
            plugin = module.FilterModule() if kind == "filter" else module.TestModule()
            for short, function in (plugin.filters() if kind == "filter" else plugin.tests()).items():
                spec = docs[kind][f"{COLLECTION}.{short}"]["doc"]
                params = list(inspect.signature(function).parameters.values())
                wanted = ["_input", *(p.name for p in params[1:])]
                options = spec.get("options") or {}
                if set(options) != set(wanted):
                    problems.append(f"{kind} {short}: options {sorted(options)}, the function takes {wanted}")
                positional = [p.strip() for p in str(spec.get("positional") or "_input").split(",")]
                if positional != wanted:
                    problems.append(f"{kind} {short}: positional {positional}, the function takes {wanted}")
                required = {p.name for p in params[1:] if p.default is inspect.Parameter.empty}
                documented = {k for k, v in options.items() if k != "_input" and v.get("required")}
                if required != documented:
                    problems.append(f"{kind} {short}: required {sorted(documented)},"
                                    f" the function needs {sorted(required)}")
    assert not problems, "\n".join(problems)
