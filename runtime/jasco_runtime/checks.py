"""The one set of numeric input checks (request settings, window plans, chord times): each failure is an
:class:`InputError` with one line naming the setting."""
from __future__ import annotations

import math
import numbers
import typing as tp

from .errors import InputError


def number(name: str, value: tp.Any, *, positive: bool = False, unit: str = "") -> float:
    """A finite real number (booleans, strings, NaN and infinities refused); ``positive``: > 0."""
    what = f"a number of {unit}" if unit else "a number"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(f"{name} must be {what}, got {value!r}")
    x = float(value)
    if not math.isfinite(x):
        raise InputError(f"{name} must be a finite {what[2:]}, got {value!r}")
    if positive and x <= 0:
        raise InputError(f"{name} must be > 0{' ' + unit if unit else ''}, got {x:g}")
    return x


def parse_number(name: str, value: tp.Any, **kw: tp.Any) -> float:
    """:func:`number`, also accepting numeric text ("4.5") as typed on a command line or in a chord file."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise InputError(f"{name} must be a number, got {value!r}") from None
    return number(name, value, **kw)


def integer(name: str, value: tp.Any, lo: int, hi: int, hint: str = "") -> int:
    """An integer in [lo, hi] (a float with an integral value is accepted: JSON has one number type)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise InputError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if not lo <= value <= hi:
        raise InputError(f"{name} must be between {lo} and {hi}, got {value}{hint}")
    return value
