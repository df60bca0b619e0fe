"""Paths named on a command line, checked before any heavy work: what exists and what kind of thing it is
(a folder is not "missing", /dev/zero is not a file), and output names the file system can hold."""
from __future__ import annotations

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


def input_folder(path: Path, what: str, hint: str = "") -> Path:
    """An existing folder; an existing file is "not a folder", not "does not exist"."""
    hint = f"; {hint}" if hint else ""
    if path.exists() and not path.is_dir():
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
