"""Typed reads of the manifest's JSON objects: every problem is one :class:`ManifestError` naming the dotted field."""
from __future__ import annotations

import typing as tp
from pathlib import Path

from ..errors import InputError

_DAMAGED = "the manifest is damaged — re-run jasco-export"


class ManifestError(InputError):
    """A damaged manifest field; :meth:`ExportFolder.open` prefixes the manifest's path."""

    def __init__(self, problem: str, missing: bool = False):
        super().__init__(problem)
        self.problem, self.missing = problem, missing

    def at(self, path: Path) -> InputError:
        return InputError(f"{path}{' ' if self.missing else ': '}{self.problem}; {_DAMAGED}")


_NUM = (int, float)


def _type_name(t: tp.Any) -> str:
    return " or ".join(x.__name__ for x in t) if isinstance(t, tuple) else t.__name__


class _Fields:
    """Typed reads of one JSON object; every problem names the dotted field."""

    def __init__(self, obj: tp.Any, where: str):
        if not isinstance(obj, dict):
            raise ManifestError(f"'{where or 'manifest'}' must be an object, got {type(obj).__name__}")
        self.obj, self.where = obj, where

    def name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def _typed(self, key: str, value: tp.Any, typ: tp.Any) -> tp.Any:
        if isinstance(value, bool) and typ is not bool or not isinstance(value, typ):
            raise ManifestError(f"'{self.name(key)}' must be {_type_name(typ)}, got {value!r}")
        return value

    def req(self, key: str, typ: tp.Any) -> tp.Any:
        if key not in self.obj:
            raise ManifestError(f"lacks '{self.name(key)}'", missing=True)
        return self._typed(key, self.obj[key], typ)

    def opt(self, key: str, typ: tp.Any, default: tp.Any = None) -> tp.Any:
        value = self.obj.get(key)
        return default if value is None else self._typed(key, value, typ)

    def sub(self, key: str) -> "_Fields":
        return _Fields(self.req(key, dict), self.name(key))

    def strings(self, key: str, required: bool = True) -> tp.Tuple[str, ...]:
        items = self.req(key, list) if required else self.opt(key, list, [])
        for i, x in enumerate(items):
            if not isinstance(x, str):
                raise ManifestError(f"'{self.name(key)}[{i}]' must be str, got {x!r}")
        return tuple(items)

    def positive(self, key: str, typ: tp.Any) -> tp.Any:
        value = self.req(key, typ)
        if value <= 0:
            raise ManifestError(f"'{self.name(key)}' must be positive, got {value}")
        return value

    def rest(self, *known: str) -> tp.Dict[str, tp.Any]:
        return {k: v for k, v in self.obj.items() if k not in known}


def _drop_none(d: tp.Dict[str, tp.Any]) -> tp.Dict[str, tp.Any]:
    return {k: v for k, v in d.items() if v is not None}
