#!/usr/bin/env python3
"""Read a gpu_lab connection kit (kit.yml) for the workstation role and print it as JSON.

The role reads it with a pipe lookup on the controller (the student's machine). It never
fails: a kit that cannot be used gives {"path": ..., "error": "<one sentence>"} for the
role's preflight to report. A good kit gives its fields, checked and typed:
{"path", "lab", "class", "student", "address", "user", "jupyter_port", "host_keys",
"jupyter_token"}. The token is in the output: the role reads it only in no_log tasks.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

KIT_VERSION = 1
LAB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
HOST_KEY = re.compile(r"(?:ssh-|ecdsa-|sk-)\S+ [A-Za-z0-9+/]+={0,3}\Z")
TOKEN = re.compile(r"[A-Za-z0-9_.~-]*\Z")


def read(path: Path) -> dict[str, object]:
    ask = "ask your instructor for your kit folder and pass its kit.yml: -e kit=/path/to/kit.yml."
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {"error": f"No connection kit at {path}: {ask}"}
    except IsADirectoryError:
        return {"error": f"{path} is a folder: pass the kit.yml in it (-e kit={path}/kit.yml)."}
    except (OSError, UnicodeDecodeError) as err:
        return {"error": f"Cannot read the connection kit {path} ({err.__class__.__name__}): {ask}"}
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        data = None
    if not isinstance(data, dict) or data.get("gpu_lab_kit") is None:
        return {"error": f"{path} is not a gpu_lab connection kit (no 'gpu_lab_kit:' line): {ask}"}
    if data["gpu_lab_kit"] != KIT_VERSION:
        return {"error": f"{path} is a gpu_lab connection kit of format {data['gpu_lab_kit']!r}, and this"
                f" gpu_lab reads format {KIT_VERSION}: update gpu_lab, or ask for a new kit."}
    return check(path, data)


def check(path: Path, data: dict[str, object]) -> dict[str, object]:
    keys = data.get("host_keys")
    port = data.get("jupyter_port")
    token = data.get("jupyter_token") or ""
    problems = [
        name for name, good in (
            ("lab", isinstance(data.get("lab"), str) and LAB_NAME.match(data["lab"])),
            ("address", isinstance(data.get("address"), str) and re.fullmatch(r"\S+", data["address"])),
            ("user", isinstance(data.get("user"), str) and re.fullmatch(r"[A-Za-z0-9_.][A-Za-z0-9_.-]*", data["user"])),
            ("jupyter_port", isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536),
            ("host_keys", isinstance(keys, list) and keys and all(isinstance(k, str) and HOST_KEY.match(k.strip())
                                                                   for k in keys)),
            ("jupyter_token", isinstance(token, str) and TOKEN.match(token)),
        ) if not good
    ]
    if problems:
        return {"error": f"The connection kit {path} has no valid {', '.join(problems)}: it was changed or"
                " cut short; ask your instructor for a new one."}
    return {
        "lab": data["lab"],
        "class": str(data.get("class") or ""),
        "student": str(data.get("student") or ""),
        "address": data["address"],
        "user": data["user"],
        "jupyter_port": port,
        "host_keys": [key.strip() for key in keys],  # type: ignore[union-attr]
        "jupyter_token": token,
    }


def main() -> None:
    path = Path(sys.argv[1])
    print(json.dumps({"path": sys.argv[1], **read(path)}))


if __name__ == "__main__":
    main()
