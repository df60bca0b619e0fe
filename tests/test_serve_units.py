"""jasco-serve pieces without Ray: API keys, bounded error lines, start-up checks, the loopback shim."""
from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys

import pytest

from jasco_runtime.errors import InputError


def test_key_file_and_identify(tmp_path):
    from jasco_serve.auth import ApiKeys, read_key_file

    f = tmp_path / "keys.txt"
    f.write_text("# ops\n  0123456789abcdef0123  \n\nfedcba9876543210fedc\n")
    keys = ApiKeys(f)
    assert keys.enabled and read_key_file(f) == ["0123456789abcdef0123", "fedcba9876543210fedc"]
    kid = keys.identify("Bearer fedcba9876543210fedc")
    assert kid == hashlib.sha256(b"fedcba9876543210fedc").hexdigest()[:12]
    assert keys.identify("bearer   0123456789abcdef0123 ") is not None  # scheme is case-insensitive
    for header in (None, "", "Bearer", "Bearer x", "Basic 0123456789abcdef0123", "0123456789abcdef0123",
                   "Bearer 0123456789abcdef012", "Bearer 0123456789abcdef01234"):
        assert keys.identify(header) is None, header
    assert ApiKeys(None).enabled is False
    for text, words in (("", "holds no key"), ("short\n", "shorter than 16"), ("with space inside key\n", "has spaces")):
        f.write_text(text)
        with pytest.raises(InputError, match=words):
            keys.reload()
    assert keys.identify("Bearer fedcba9876543210fedc") == kid  # a failed reload keeps the keys in use
    with pytest.raises(InputError, match="does not exist"):
        read_key_file(tmp_path / "missing.txt")
    f.write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(InputError, match="cannot be read"):
        read_key_file(f)


def test_error_lines_are_bounded():
    from jasco_serve.http_io import HTTPError, bounded

    assert bounded("short message") == "short message"
    assert bounded("two\nlines\r\n\tand\x00nul") == "two lines and nul"
    long = bounded("cannot parse chord '" + "Q" * 10**7 + "'; use LABEL:START")
    assert len(long) <= 300 and "Q" * 60 not in long and "…" in long and long.endswith("use LABEL:START"), long
    words = bounded("word " * 10**6)
    assert len(words) == 300 and words.endswith("…")
    err = HTTPError(400, "x" * 5000 + "\nTraceback")
    assert len(err.message) <= 300 and "\n" not in err.message
    assert err.response().status_code == 400


def test_start_up_checks(tiny_engines, tmp_path):
    from jasco_serve import preflight
    from jasco_serve.config import ServeConfig

    cfg = ServeConfig(tiny_engines.out, replicas=3, gpus_per_replica=0.5, cpus_per_replica=1).check()
    with pytest.raises(InputError, match=r"3 replica\(s\) × --gpus-per-replica 0.5 need 2 GPU\(s\), here has 1"):
        preflight.check_resources(cfg, gpus=1, cpus=8, where="here")
    preflight.check_resources(cfg, gpus=1.5, cpus=8, where="here")
    with pytest.raises(InputError, match="need 3 CPUs, the Ray cluster has 2"):
        preflight.check_cluster(cfg, {"CPU": 2.0, "GPU": 4.0})
    auto = ServeConfig(tiny_engines.out, replicas="auto", min_replicas=2, max_replicas=8, cpus_per_replica=1).check()
    preflight.check_resources(auto, gpus=0, cpus=2, where="here")  # only the minimum must fit
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(InputError, match="already in use"):
            preflight.check_host_port("127.0.0.1", s.getsockname()[1])
    with pytest.raises(InputError, match="not an address of this machine"):
        preflight.check_host_port("192.0.2.123", 8000)
    with pytest.raises(InputError, match="is given twice"):
        ServeConfig(tiny_engines.out, more_engines=(tiny_engines.out,)).check().resolve_models()


def test_loopback_shim_rewrites_wildcard_binds(tmp_path):
    """The shim itself: in a process started with it, a bind to 0.0.0.0 / [::] lands on loopback, and the kept
    port stays where it was asked."""
    from jasco_serve import loopback

    shim, why = loopback.build_shim()
    if shim is None:
        pytest.skip(why)
    keep = _free()
    code = ("import socket, sys\n"
            "out = []\n"
            "for fam, addr in ((socket.AF_INET, '0.0.0.0'), (socket.AF_INET6, '::')):\n"
            "    s = socket.socket(fam); s.bind((addr, 0)); out.append(s.getsockname()[0])\n"
            f"k = socket.socket(); k.bind(('0.0.0.0', {keep})); out.append(k.getsockname()[0])\n"
            "print(' '.join(out))\n")
    env = {**os.environ, **loopback.local_ray_env(shim, keep)}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["127.0.0.1", "::ffff:127.0.0.1", "0.0.0.0"]
    # and without it, the same binds are the wildcard (the test would catch a shim that does nothing)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.split() == ["0.0.0.0", "::", "0.0.0.0"]


def _free() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]
