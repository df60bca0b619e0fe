"""Paths named on a command line, checked before any heavy work: what exists and what kind of thing it is
(a folder is not "missing", /dev/zero is not a file), and output names the file system can hold."""
from __future__ import annotations

import errno
import os
from pathlib import Path

from ..errors import InputError

# atomic writes create ".NAME.XXXXXXXX.tmp" beside NAME (files.atomic_write): 13 bytes more than the name
TEMP_NAME_EXTRA = len(".") + 8 + len(".tmp")


def input_file(path: Path, what: str, hint: str = "") -> Path:
    """An existing regular file; a missing path, a folder and a device are each named as what they are."""
    hint = f"; {hint}" if hint else ""
    if not os.path.lexists(path):
        raise InputError(f"{what} {path} does not exist{hint}")
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder, not a file{hint}")
    if not path.is_file():
        raise InputError(f"{what} {path} is not a regular file (a device or a pipe?){hint}")
    return path


def _exists(path: Path, what: str) -> bool:
    """``path.exists()``, with a name the file system cannot hold (ENAMETOOLONG: a component over NAME_MAX, or
    the whole path over PATH_MAX) reported as bad input instead of an ``OSError``."""
    try:
        return path.exists()
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG:
            raise
    longest = max(path.parts, key=lambda part: len(os.fsencode(part)))
    size = len(os.fsencode(longest))
    folder = next((p for p in path.parents if _is_dir(p)), Path("."))
    if size > _name_max(folder):
        raise InputError(f"a name in {what} is {size} bytes long; this file system takes at most "
                         f"{_name_max(folder)}; choose a shorter name")
    raise InputError(f"{what} is {len(os.fsencode(str(path)))} bytes long, more than this system takes in a path; "
                     "choose a shorter path")


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def input_folder(path: Path, what: str, hint: str = "") -> Path:
    """An existing folder; an existing file is "not a folder", not "does not exist"; a name too long for the
    file system is named as such (Z06's case, for folders)."""
    hint = f"; {hint}" if hint else ""
    if _exists(path, what) and not path.is_dir():
        raise InputError(f"{what} {path} is a file, not a folder{hint}")
    return path


def _name_max(folder: Path) -> int:
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return 255


def output_file(path: Path, option: str, suffix: str) -> Path:
    """An output file we can create: right suffix, existing writable folder, not a folder, a name the file
    system takes (with the temp file's extra bytes)."""
    if path.suffix.lower() != suffix:
        raise InputError(f"{option} must end in {suffix}, got {path}")
    if not path.parent.is_dir():
        if path.parent.exists():
            raise InputError(f"{option} {path}: {path.parent} is a file, not a folder; choose another {option}")
        raise InputError(f"output folder {path.parent} of {option} does not exist; create it first")
    limit = _name_max(path.parent) - TEMP_NAME_EXTRA  # before any stat of the path: ENAMETOOLONG (Z06)
    if len(os.fsencode(path.name)) > limit:
        raise InputError(f"the file name of {option} is {len(os.fsencode(path.name))} bytes long; this file system "
                         f"takes at most {limit} here; choose a shorter name")
    if path.is_dir():
        raise InputError(f"{option} {path} is a folder; give a file name such as {path / ('out' + suffix)}")
    if not os.access(path.parent, os.W_OK):
        raise InputError(f"cannot write to {path.parent} (permission denied); choose another {option}")
    return path
