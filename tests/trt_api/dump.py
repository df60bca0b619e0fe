"""Dump the API of the importable ``tensorrt_bindings`` module as JSON on stdout (run in a subprocess with the
stub libraries on LD_LIBRARY_PATH): every class with its members (pybind11 docstring first lines carry the
signatures) and enum values, every module-level function."""
from __future__ import annotations

import enum
import json
import sys


def _doc(obj) -> str:
    doc = getattr(obj, "__doc__", None) or ""
    return "\n".join(doc.strip().splitlines()[:6])


def main() -> None:
    import tensorrt_bindings as trt

    out = {"version": trt.__version__, "classes": {}, "functions": {}, "values": {}}
    for name in dir(trt):
        if name.startswith("__"):
            continue
        obj = getattr(trt, name)
        if isinstance(obj, type):
            entry = {"members": {}, "enum": {}}
            entries = getattr(obj, "__entries", None) or getattr(obj, "__members__", None)
            if isinstance(entries, dict):
                for k, v in entries.items():
                    value = v[0] if isinstance(v, tuple) else v
                    entry["enum"][k] = int(value)
            for m in dir(obj):
                if m.startswith("__") and m not in ("__getitem__", "__len__", "__iter__", "__enter__", "__exit__",
                                                    "__eq__", "__buffer__", "__init__", "__call__"):
                    continue
                try:
                    attr = getattr(obj, m)
                except Exception:  # noqa: BLE001 - a property that needs an instance
                    attr = None
                entry["members"][m] = _doc(attr) if attr is not None else ""
            out["classes"][name] = entry
        elif callable(obj):
            out["functions"][name] = _doc(obj)
        elif isinstance(obj, (int, str, float)) or isinstance(obj, enum.Enum):
            out["values"][name] = str(obj)
        else:
            out["values"][name] = type(obj).__name__
    json.dump(out, sys.stdout, indent=0, sort_keys=True)


if __name__ == "__main__":
    main()
