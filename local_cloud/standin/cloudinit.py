"""What the stand-ins take from an instance's EC2 user data, as cloud-init would at the
instance's first boot.

Two things are emulated:

* cloud-config's ``ssh_authorized_keys`` (a YAML list of public key lines), which
  cloud-init adds to the default user's (``ubuntu``) authorized_keys beside the key pair's
  key, at the instance's first boot only (a per-instance module). That is how a class's
  staff key gets onto every student's host while the key pair stays the student's own.
  Read once, when the stand-in is made: user data changed later has no effect on the keys.
* user scripts (``#!`` user data, or ``text/x-shellscript`` parts of MIME multipart user
  data, parsed with Python's email package): run as root at the first boot, and at every
  later boot when a cloud-config part sets ``cloud_final_modules`` with
  ``[scripts-user, always]`` (AWS's documented way to fix a lost key pair's
  authorized_keys). Read from the user data as it is at that boot (boot_scripts).

Everything else is ignored: other cloud-config keys (``users``, ``packages``, ``runcmd``,
...), other MIME part types, gzip-compressed user data.
"""

from __future__ import annotations

import base64
import binascii
from email import message_from_string
from typing import Any

import yaml

CLOUD_CONFIG_HEADER = "#cloud-config"


def user_data_text(stored: Any) -> str | None:
    """The user data as text, from what moto keeps on its Instance object.

    moto 5.2 keeps ``Instance.user_data`` as a ``moto.core.types.Base64EncodedString``:
    the API's base64, as sent (its ``str()``; ``.decode()`` gives the plain text). A plain
    base64 ``str`` or ``bytes`` is taken too. Not base64, or not UTF-8 once decoded
    (gzip, binary): None, as nothing here could read it.
    """
    if stored is None:
        return None
    try:
        encoded = stored if isinstance(stored, bytes) else str(stored).encode("ascii")
        raw = base64.b64decode(encoded, validate=True)
        return raw.decode("utf-8")
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        return None


def authorized_keys(user_data: str | None) -> tuple[list[str], str | None]:
    """(the keys of cloud-config's ``ssh_authorized_keys``, a problem worth saying or None).

    Not cloud-config, or cloud-config without the key: no keys, no problem. Malformed
    YAML or a value of the wrong shape: no keys (or only the well-formed ones), and the
    problem, for the harness's error lines.
    """
    if not user_data:
        return [], None
    first_line = user_data.lstrip("\ufeff").split("\n", 1)[0].rstrip("\r")
    if first_line.rstrip() != CLOUD_CONFIG_HEADER:
        return [], None  # a script, MIME multipart, a jinja template...: not emulated
    try:
        config = yaml.safe_load(user_data)
    except yaml.YAMLError as exc:
        return [], f"user data is #cloud-config but not valid YAML (ignored): {exc}"
    if config is None:
        return [], None
    if not isinstance(config, dict):
        return [], f"user data is #cloud-config but not a mapping (ignored): {type(config).__name__}"
    value = config.get("ssh_authorized_keys")
    if value is None:
        return [], None
    if not isinstance(value, list):
        return [], f"cloud-config ssh_authorized_keys is not a list (ignored): {value!r}"
    keys = [k.strip() for k in value if isinstance(k, str) and k.strip()]
    bad = [k for k in value if not isinstance(k, str)]
    problem = f"cloud-config ssh_authorized_keys: entries that are not strings (ignored): {bad!r}" if bad else None
    return keys, problem


def _parts(user_data: str) -> list[tuple[str, str]]:
    """(content type, text) of each part: a MIME multipart's parts, or the whole as one part
    whose type follows its first line, as cloud-init tells them apart."""
    text = user_data.lstrip("\ufeff")
    if text.startswith("Content-Type:") or text.startswith("MIME-Version:"):
        found = []
        for part in message_from_string(text).walk():
            if part.is_multipart():
                continue
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                found.append((part.get_content_type(), payload.decode("utf-8", "replace")))
        return found
    if text.startswith("#!"):
        return [("text/x-shellscript", text)]
    if text.startswith(CLOUD_CONFIG_HEADER):
        return [("text/cloud-config", text)]
    return []


def _scripts_always(config_text: str) -> bool:
    """Whether a cloud-config part sets cloud_final_modules with scripts-user at frequency always."""
    try:
        config = yaml.safe_load(config_text)
    except yaml.YAMLError:
        return False
    modules = config.get("cloud_final_modules") if isinstance(config, dict) else None
    for module in modules if isinstance(modules, list) else []:
        if (isinstance(module, list) and len(module) >= 2 and module[0] in ("scripts-user", "scripts_user")
                and module[1] == "always"):
            return True
    return False


def boot_scripts(user_data: str | None, first_boot: bool) -> list[str]:
    """The user scripts cloud-init runs (as root, late in boot) at this boot of the instance:
    at its first boot, and at any boot whose user data runs scripts-user ``always``."""
    if not user_data:
        return []
    parts = _parts(user_data)
    always = any(_scripts_always(text) for kind, text in parts if kind == "text/cloud-config")
    if not (first_boot or always):
        return []
    return [text for kind, text in parts if kind == "text/x-shellscript" and text.startswith("#!")]
