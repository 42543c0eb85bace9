"""What the stand-ins take from an instance's EC2 user data, as cloud-init would at the
instance's first boot.

Only one key of cloud-config is emulated: ``ssh_authorized_keys`` (a YAML list of public
key lines), which cloud-init adds to the default user's (``ubuntu``) authorized_keys
beside the key pair's key. That is how a class's staff key gets onto every student's
host while the key pair stays the student's own. Everything else in user data is
ignored: other cloud-config keys (``users``, ``packages``, ``runcmd``, ...), shell
scripts, MIME multipart and gzip-compressed user data.

Read once, when the stand-in is made (the instance's first boot): as with cloud-init,
user data changed later has no effect on the keys.
"""

from __future__ import annotations

import base64
import binascii
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
