"""Optional API keys (``--api-key-file``): ``Authorization: Bearer KEY`` on ``/v1/*`` (and ``/metrics`` unless
``--metrics-public``). The file holds one key per line (blank lines and ``#`` comments ignored); jasco-serve
re-reads it on SIGHUP. A key is compared in constant time (:func:`hmac.compare_digest` against every key, so the
time does not depend on which key matched either), never logged, and named in ``/metrics`` only by its id: the
first 12 hex digits of its SHA-256 (keys should be long random strings, e.g. ``openssl rand -hex 32``).
"""
from __future__ import annotations

import hashlib
import hmac
import typing as tp
from pathlib import Path

from jasco_runtime.errors import InputError

MIN_KEY_CHARS = 16


def key_id(key: str) -> str:
    """The name a key has in metrics and logs: not the key, not enough to find it."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]


def read_key_file(path: Path) -> tp.List[str]:
    """The keys of ``path``; an :class:`InputError` (one line, no file contents) when it cannot be used."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"--api-key-file {path} does not exist; write one key per line") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"--api-key-file {path} cannot be read ({type(exc).__name__}); "
                         "give a readable UTF-8 file with one key per line") from None
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        key = line.strip()
        if not key or key.startswith("#"):
            continue
        if len(key) < MIN_KEY_CHARS or any(c.isspace() for c in key):
            raise InputError(f"--api-key-file {path}: the key on line {number} is shorter than {MIN_KEY_CHARS} "
                             "characters or has spaces; use long random keys (openssl rand -hex 32)")
        keys.append(key)
    if not keys:
        raise InputError(f"--api-key-file {path} holds no key; write one key per line (openssl rand -hex 32)")
    return keys


class ApiKeys:
    """The accepted keys (none: every request is accepted)."""

    def __init__(self, path: tp.Optional[Path]):
        self.path = Path(path) if path is not None else None
        self._keys: tp.List[bytes] = []
        self._ids: tp.List[str] = []
        if self.path is not None:
            self.reload()

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def reload(self) -> int:
        """Re-read the file (SIGHUP); on an error the keys in use stay and the :class:`InputError` is raised."""
        assert self.path is not None
        keys = read_key_file(self.path)
        self._keys = [k.encode("utf-8") for k in keys]
        self._ids = [key_id(k) for k in keys]
        return len(keys)

    def identify(self, authorization: tp.Optional[str]) -> tp.Optional[str]:
        """The id of the key an ``Authorization`` header carries, or None when it carries no accepted key."""
        if not authorization:
            return None
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        given = token.strip().encode("utf-8", "replace")
        found = None
        for key, kid in zip(self._keys, self._ids):  # every key compared: no early exit
            if hmac.compare_digest(given, key):
                found = kid
        return found
