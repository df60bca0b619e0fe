"""File helpers shared by the exporter, the runtime and the benchmarks: atomic writes and digests."""
from __future__ import annotations

import hashlib
import os
import tempfile
import typing as tp
from pathlib import Path

PathLike = tp.Union[str, os.PathLike]


def atomic_write(path: PathLike, write: tp.Callable[[tp.BinaryIO], None]) -> None:
    """Write through a temp file in the same folder, then rename: readers never see a partial file.
    The file gets the permissions a plain ``open`` would give (mkstemp's are private)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _write_temp(path: Path, data: tp.Union[bytes, bytearray, memoryview]) -> Path:
    """``data`` in a hidden temp file beside ``path`` (normal permissions); removed again if writing fails."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
    except BaseException:
        os.unlink(tmp)
        raise
    return Path(tmp)


def atomic_write_all(files: tp.Sequence[tp.Tuple[PathLike, tp.Union[bytes, bytearray, memoryview]]]) -> tp.Optional[str]:
    """Write several files all or nothing: every one goes to a temp file first, then all are renamed.
    On any failure (full disk, SIGTERM while writing) the temp files and the files already renamed are removed.
    SIGINT/SIGTERM during the renames (microseconds per file) are held until every file is in place, so a
    signal never leaves some of the outputs: the name of a held signal ("SIGTERM") is returned, else None."""
    from .signals import signals_held

    temps: tp.List[tp.Tuple[Path, Path]] = []
    done: tp.List[Path] = []
    try:
        for path, data in files:
            temps.append((_write_temp(Path(path), data), Path(path)))
        with signals_held() as held:
            for tmp, path in temps:
                os.replace(tmp, path)
                done.append(path)
    except BaseException:
        for tmp, _ in temps:
            if tmp.exists():
                tmp.unlink()
        for path in done:
            path.unlink(missing_ok=True)
        raise
    return held.name


def atomic_write_bytes(path: PathLike, data: tp.Union[bytes, bytearray, memoryview]) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path: PathLike, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in 4 MiB chunks (checkpoints and graphs are GBs)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
