"""Keep a private local Ray instance on loopback: every port of every Ray process on 127.0.0.1.

Ray has no setting for this. ``ray.init(_node_ip_address="127.0.0.1")`` is silently replaced by the machine's
address on Linux (``ray._private.services.resolve_ip_for_localhost``) unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
(then ``get_node_ip_address`` answers the loopback address), and Ray's gRPC servers (GCS, raylet, object
manager, every worker) bind ``0.0.0.0`` / ``[::]`` whatever the node address is. So the local instance is
started with :func:`local_ray_env`: that variable, and ``native/loopback.c`` preloaded into every Ray process
(an ``LD_PRELOAD`` shim rewriting non-loopback ``bind()`` calls to loopback; ``JASCO_LOOPBACK_KEEP_PORT`` keeps
the HTTP port where ``--host`` put it). The driver (jasco-serve itself) hosts a Ray worker too, so the CLI
re-executes itself once with the shim loaded (:func:`reexec_argv`). ``--address`` (a cluster of yours) is left
alone. Tested by listing the listening sockets of the service's process tree (tests/test_serve_security.py).
"""
from __future__ import annotations

import hashlib
import importlib.resources
import os
import shutil
import subprocess
import sys
import tempfile
import typing as tp
from pathlib import Path

ACTIVE = "JASCO_LOOPBACK_SHIM"  # set to the shim's path in the environment of a process started with it
KEEP_PORT = "JASCO_LOOPBACK_KEEP_PORT"


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jasco-serve"


def build_shim() -> tp.Tuple[tp.Optional[Path], str]:
    """The compiled shim (cached by source hash), or ``(None, why)`` where no C compiler works."""
    source = importlib.resources.files("jasco_serve").joinpath("native", "loopback.c").read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:16]
    lib = _cache_dir() / f"libjascoloopback-{digest}.so"
    if lib.is_file():
        return lib, ""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        return None, "no C compiler (cc) to build the loopback shim"
    try:
        lib.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "loopback.c"
            src.write_bytes(source)
            out = Path(tmp) / lib.name
            r = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(out), str(src), "-ldl"],
                               capture_output=True, text=True, timeout=120)
            if r.returncode != 0:
                return None, f"building the loopback shim failed ({(r.stderr.strip().splitlines() or ['?'])[-1][:200]})"
            os.replace(out, lib)  # atomic: concurrent starts never load a half-written file
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"building the loopback shim failed ({type(exc).__name__})"
    return lib, ""


def local_ray_env(shim: tp.Optional[Path], keep_port: tp.Optional[int]) -> tp.Dict[str, str]:
    """Environment for the process that starts the local Ray instance (Ray's processes inherit it)."""
    env = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # node IP = 127.0.0.1 (see the module docstring)
           "RAY_COLOR_PREFIX": "0",  # no colour codes in forwarded log lines
           "RAY_USAGE_STATS_ENABLED": "0"}
    if shim is not None:
        preload = os.environ.get("LD_PRELOAD", "")
        if str(shim) not in preload.split():
            preload = f"{shim} {preload}".strip()
        env.update({"LD_PRELOAD": preload, ACTIVE: str(shim)})
    env[KEEP_PORT] = str(keep_port) if keep_port else ""
    return env


def shim_loaded() -> bool:
    """Whether this process runs with the shim preloaded (its path is mapped)."""
    shim = os.environ.get(ACTIVE)
    if not shim:
        return False
    try:
        return shim in Path("/proc/self/maps").read_text()
    except OSError:
        return False


def reexec_argv() -> tp.List[str]:
    """The command line that restarts this jasco-serve (``python -m jasco_serve.cli`` + its arguments)."""
    return [sys.executable, "-m", "jasco_serve.cli", *sys.argv[1:]]
