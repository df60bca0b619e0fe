"""Where an export is written, and the rules that make sure it never deletes what it did not write.

* ``--out`` may not be, contain, or sit inside what the export reads (the model folder, a local T5 folder, the
  chord mapping, the Hugging Face cache) nor sit inside another export's folder.
* ``--force`` replaces only an export of this project (its manifest says so) or an empty folder, and says so.
* An exclusive lock (``.<name>.lock`` beside ``--out``) makes a second export into the same folder fail at once.
* The new export is built in a hidden sibling folder and swapped in atomically (``renameat2(RENAME_EXCHANGE)``
  where the kernel and file system have it; else two renames with SIGINT/SIGTERM held back around them), so at
  every moment ``--out`` is either the complete old export or the complete new one.  The old one is deleted
  after the swap, with the signals held back, so an interrupt cannot leave it half deleted.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import os
import shutil
import signal
import tempfile
import typing as tp
from dataclasses import dataclass, field
from pathlib import Path

from jasco_runtime.export_folder import is_export_folder

from .errors import InputError

_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@dataclass(frozen=True)
class Protected:
    """A path the export reads; ``--out`` must keep clear of it."""

    path: Path
    what: str  # "the model folder", "the Hugging Face cache", ...


def _resolved(p: tp.Union[str, os.PathLike]) -> Path:
    return Path(os.path.abspath(os.path.expanduser(p))).resolve()


def _within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def inputs_of(model: str, t5: tp.Optional[str], chords_mapping: tp.Optional[str]) -> tp.List[Protected]:
    """What an export with these options reads from disk: the model folder (when ``model`` is a folder), a local
    T5 folder, the chord mapping and the Hugging Face cache (hub ids and T5 are read from there)."""
    from huggingface_hub import constants

    out = [Protected(_resolved(constants.HF_HUB_CACHE), "the Hugging Face cache")]
    for value, what in ((model, "the model folder"), (t5, "the T5 folder")):
        if value and Path(value).expanduser().is_dir():
            out.append(Protected(_resolved(value), what))
    if chords_mapping:
        out.append(Protected(_resolved(chords_mapping), "the chord mapping"))
    return out


def _enclosing_export(out: Path) -> tp.Optional[Path]:
    for parent in out.parents:
        if is_export_folder(parent):
            return parent
    return None


@dataclass
class OutputFolder:
    """The checked ``--out`` of one export; use as a context manager (it holds the lock while open)."""

    out: Path
    force: bool = False
    protected: tp.Sequence[Protected] = ()
    replaces: tp.Optional[str] = None  # what --force will replace ("an earlier export", "an empty folder")
    late_signal: tp.Optional[str] = None  # SIGINT/SIGTERM that arrived during commit (the export was finished)
    _lock: tp.Optional[tp.Tuple[int, Path]] = field(default=None, repr=False)

    # -- checks --------------------------------------------------------------------------------------------
    def check(self) -> "OutputFolder":
        """Every rule that needs no model: raises :class:`InputError` with one line naming the fix."""
        given = self.out
        if given.exists() and not given.is_dir():
            raise InputError(f"--out {given} is a file; give a folder for the export")
        out = _resolved(given)
        for p in self.protected:
            if _within(out, p.path) or _within(p.path, out):
                rel = "is" if out == p.path else "sits inside" if _within(out, p.path) else "contains"
                raise InputError(f"--out {given} {rel} {p.what} ({p.path}), which this export reads; "
                                 "choose an --out outside it")
        enclosing = _enclosing_export(out)
        if enclosing is not None:
            raise InputError(f"--out {given} sits inside another export ({enclosing}); choose an --out outside it")
        if out.exists():
            if not self.force:
                raise InputError(f"output folder {given} already exists; pass --force to replace it")
            if is_export_folder(out):
                self.replaces = "an earlier export"
            elif not any(out.iterdir()):
                self.replaces = "an empty folder"
            else:
                raise InputError(f"--force replaces only an earlier export or an empty folder, and {given} is "
                                 "neither (no jasco-trt manifest.json); choose another --out or empty it yourself")
        parent = out.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            tempfile.NamedTemporaryFile(dir=parent, prefix=".jasco-write-test-", delete=True).close()
        except OSError as exc:
            raise InputError(f"cannot write to {given.parent} ({exc.strerror or exc}); choose another --out") from exc
        self.out = out
        return self

    # -- lock ----------------------------------------------------------------------------------------------
    @property
    def lock_path(self) -> Path:
        return self.out.parent / f".{self.out.name}.lock"

    def __enter__(self) -> "OutputFolder":
        self.check()
        path = self.lock_path
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise InputError(f"another jasco-export is writing {self.out} (lock {path}); wait for it or "
                                 "choose another --out") from None
            try:  # the holder before us may have removed the file between our open and our lock: retry
                if os.fstat(fd).st_ino == os.stat(path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock = (fd, path)
        try:  # re-check under the lock: a concurrent export may have finished between check() and the lock
            self.check()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: tp.Any) -> None:
        if self._lock is not None:
            fd, path = self._lock
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # unlink while still holding the lock (see the inode check in __enter__)
            os.close(fd)
            self._lock = None

    # -- writing -------------------------------------------------------------------------------------------
    def temp_dir(self) -> Path:
        """A new hidden sibling folder to build the export in (same file system, so renames are atomic)."""
        return Path(tempfile.mkdtemp(prefix=f".{self.out.name}.tmp-", dir=self.out.parent))

    def commit(self, tmp: Path) -> None:
        """Put the finished ``tmp`` at ``--out``: a plain rename, or an atomic swap with the old export, which
        is then deleted.  SIGINT/SIGTERM are held back for the whole step; one that arrived meanwhile is recorded
        in :attr:`late_signal` (the export is complete: callers report that, not an interruption)."""
        if self._lock is None:
            raise RuntimeError("OutputFolder.commit outside its context")
        with _signals_held() as pending:
            self._put_in_place(tmp)
            self.late_signal = pending()

    def _put_in_place(self, tmp: Path) -> None:
        if not self.out.exists():
            os.rename(tmp, self.out)
            return
        if not (is_export_folder(self.out) or not any(self.out.iterdir())):  # changed since the check
            raise InputError(f"{self.out} changed during the export and is no longer an export or empty; "
                             "nothing was replaced")
        if _exchange(tmp, self.out):
            shutil.rmtree(tmp)  # the swap put the old export where the new one was
            return
        old = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.old-", dir=self.out.parent))
        os.rename(self.out, old / "export")  # out → aside, then tmp → out, no signal in between
        os.rename(tmp, self.out)
        shutil.rmtree(old)


@contextlib.contextmanager
def _signals_held() -> tp.Iterator[tp.Callable[[], tp.Optional[str]]]:
    """SIGINT and SIGTERM only recorded inside (main thread only; Python runs every signal handler there, whichever
    thread the kernel delivered it to).  The block gets a function that consumes a recorded signal and returns its
    name; one not consumed is raised again on exit, with the handlers of before."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    arrived: tp.List[int] = []

    def consume() -> tp.Optional[str]:
        name = signal.Signals(arrived[-1]).name if arrived else None
        arrived.clear()
        return name

    previous = {sig: signal.signal(sig, lambda signum, frame: arrived.append(signum)) for sig in _SIGNALS}
    try:
        yield consume
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if arrived:
            signal.raise_signal(arrived[-1])


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with Linux's ``renameat2(RENAME_EXCHANGE)``; False where unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, f"cannot swap {a} and {b}: {os.strerror(err)}")
