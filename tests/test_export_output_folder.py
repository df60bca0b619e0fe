"""The export never deletes what it did not write (jasco_export.output_folder): ``--out`` keeps clear of what the
export reads and of other exports, ``--force`` replaces only an export or an empty folder, a lock refuses a
concurrent export, and the replacement is an atomic swap.  Case ids are the new-user sweep's (XF01, K03, ...)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import typing as tp
from pathlib import Path

import pytest

from conftest import ROOT

RUN_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "export"), str(ROOT / "runtime")])}


@pytest.fixture
def no_model_loading(monkeypatch):
    from jasco_export.reference.jasco import JASCO

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(JASCO, "get_pretrained", refuse)


def export_cli(capfd, *args: str) -> tp.Tuple[int, tp.List[str]]:
    from jasco_export.cli import main

    code = main(list(args))
    return code, capfd.readouterr().err.strip().splitlines()


def tree(folder: Path) -> tp.Dict[str, int]:
    """Every file under ``folder`` (relative path → size), to prove nothing changed."""
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def model_dir(tiny_hub, tmp_path) -> Path:
    """A local model folder (the snapshot's files copied, as a user who downloaded a release has)."""
    snap = next((tiny_hub / "models--jasco-tiny--chords-drums" / "snapshots").iterdir())
    d = tmp_path / "models" / "cd"
    d.mkdir(parents=True)
    for f in snap.iterdir():
        shutil.copyfile(f, d / f.name)
    return d


@pytest.fixture
def export_copy(tiny_engines, tmp_path) -> Path:
    d = tmp_path / "exports" / "cd"
    shutil.copytree(tiny_engines.out, d)
    return d


@pytest.mark.parametrize("where, fragment", [
    ("model", "is the model folder"),                     # XF01: --out DIR --model DIR --force
    ("model-parent", "contains the model folder"),        # XF02: --out a parent of the model
    ("inside-model", "sits inside the model folder"),
    ("hub", "the Hugging Face cache"),                    # the hub cache holds every hub model
])
def test_out_never_overlaps_what_the_export_reads(where, fragment, model_dir, tiny_hub, capfd, no_model_loading):
    """XF01, XF02, XO04: with --force, an --out that is, contains or sits inside the model folder (or the hub
    cache) is refused with one line, exit 2, before the model loads; the checkpoint is untouched."""
    before = tree(model_dir)
    out = {"model": model_dir, "model-parent": model_dir.parent, "inside-model": model_dir / "engines",
           "hub": tiny_hub / "engines"}[where]
    model = "jasco-tiny/chords-drums" if where == "hub" else str(model_dir)
    code, lines = export_cli(capfd, "--model", model, "--out", str(out), "--force", "--no-e2e")
    assert code == 2 and len(lines) == 1 and fragment in lines[0], lines
    assert tree(model_dir) == before
    assert not (model_dir / "engines").exists() and not (tiny_hub / "engines").exists()


def test_chord_mapping_inside_out_is_protected(export_copy, model_dir, capfd, no_model_loading):
    """--force on a folder that holds the --chords-mapping file being read would delete it."""
    mapping = export_copy / "my_mapping.pkl"
    shutil.copyfile(model_dir / "chord_to_index_mapping.pkl", mapping)
    code, lines = export_cli(capfd, "--model", str(model_dir), "--out", str(export_copy), "--force",
                             "--chords-mapping", str(mapping))
    assert code == 2 and "contains the chord mapping" in lines[0], lines
    assert mapping.is_file()


def test_out_inside_another_export_is_refused(export_copy, capfd, no_model_loading):
    """XO12: --out <other export>/golden --force would replace that export's golden set."""
    before = tree(export_copy)
    code, lines = export_cli(capfd, "--model", "jasco-tiny/chords-drums", "--out", str(export_copy / "golden"),
                             "--force")
    assert code == 2 and len(lines) == 1 and "sits inside another export" in lines[0], lines
    assert tree(export_copy) == before


def test_force_refuses_a_folder_that_is_not_an_export(tmp_path, capfd, no_model_loading):
    """--force replaces only an export of this project or an empty folder: a user's folder is kept."""
    d = tmp_path / "mine"
    d.mkdir()
    (d / "notes.txt").write_text("keep me")
    (d / "manifest.json").write_text(json.dumps({"name": "some other tool"}))  # not ours
    code, lines = export_cli(capfd, "--model", "jasco-tiny/chords-drums", "--out", str(d), "--force")
    assert code == 2 and len(lines) == 1 and "neither" in lines[0], lines
    assert (d / "notes.txt").read_text() == "keep me"


def test_force_accepts_an_export_or_an_empty_folder(export_copy, tmp_path):
    from jasco_export.output_folder import OutputFolder

    empty = tmp_path / "empty"
    empty.mkdir()
    assert OutputFolder(export_copy, force=True).check().replaces == "an earlier export"
    assert OutputFolder(empty, force=True).check().replaces == "an empty folder"
    assert OutputFolder(tmp_path / "new").check().replaces is None


def test_concurrent_export_into_one_out_fails_at_once(tmp_path, capfd, no_model_loading):
    """K03: a second export into the same --out, while the first holds it, fails with one line (it used to
    exit 0 after silently deleting the first)."""
    from jasco_export.output_folder import OutputFolder

    out = tmp_path / "K3"
    with OutputFolder(out):
        code, lines = export_cli(capfd, "--model", "jasco-tiny/chords-drums", "--out", str(out), "--no-e2e")
    assert code == 2 and len(lines) == 1 and "another jasco-export is writing" in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # the lock file went with its holder


def test_lock_is_exclusive_between_processes(tmp_path):
    """The lock is a real flock: a second process cannot take it while this one holds it."""
    from jasco_export.output_folder import OutputFolder

    out = tmp_path / "o"
    probe = ("import sys; from pathlib import Path; from jasco_export.output_folder import OutputFolder\n"
             "try:\n    OutputFolder(Path(sys.argv[1])).__enter__()\nexcept Exception as e:\n    print(e); sys.exit(3)")
    with OutputFolder(out):
        r = subprocess.run([sys.executable, "-c", probe, str(out)], env=RUN_ENV, capture_output=True, text=True)
        assert r.returncode == 3 and "another jasco-export" in r.stdout, r.stdout + r.stderr
    r = subprocess.run([sys.executable, "-c", probe, str(out)], env=RUN_ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def _new_export(target, marker: str) -> Path:
    tmp = target.temp_dir()
    (tmp / "manifest.json").write_text(json.dumps({"schema_version": "2.0", "model": {}, "graphs": {}, "files": {},
                                                   "marker": marker}))
    return tmp


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2-exchange", "two-renames"])
def test_replacement_is_a_swap_that_leaves_nothing_beside(exchange, export_copy, monkeypatch):
    from jasco_export import output_folder
    from jasco_export.output_folder import OutputFolder

    if not exchange:
        monkeypatch.setattr(output_folder, "_exchange", lambda a, b: False)
    (export_copy / "junk").mkdir()
    for i in range(200):
        (export_copy / "junk" / f"{i}.bin").write_bytes(b"x")
    with OutputFolder(export_copy, force=True) as target:
        target.commit(_new_export(target, "new"))
    assert json.loads((export_copy / "manifest.json").read_text())["marker"] == "new"
    assert sorted(p.name for p in export_copy.iterdir()) == ["manifest.json"]
    assert sorted(p.name for p in export_copy.parent.iterdir()) == [export_copy.name]


def test_commit_refuses_a_folder_that_changed_into_user_data(export_copy):
    """If --out stops being an export while the export runs, nothing is replaced."""
    from jasco_export.errors import InputError
    from jasco_export.output_folder import OutputFolder

    with OutputFolder(export_copy, force=True) as target:
        (export_copy / "manifest.json").unlink()
        (export_copy / "mine.txt").write_text("user data")
        tmp = _new_export(target, "new")
        with pytest.raises(InputError, match="no longer an export"):
            target.commit(tmp)
    assert (export_copy / "mine.txt").read_text() == "user data"


def test_signals_during_the_swap_wait_for_it(export_copy):
    """SIGTERM inside the swap is held back until the old export is gone and the new one is in place, then
    reported as having arrived late (S09/S10's rule: the message follows what happened)."""
    from jasco_export.output_folder import OutputFolder
    from jasco_runtime.signals import sigterm_interrupts

    (export_copy / "junk").mkdir()
    for i in range(2000):
        (export_copy / "junk" / f"{i}.bin").write_bytes(b"x")
    real_rmtree = shutil.rmtree

    def rmtree_with_signal(path, *a, **k):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives in the middle of deleting the old export
        time.sleep(0.05)
        return real_rmtree(path, *a, **k)

    with sigterm_interrupts(), OutputFolder(export_copy, force=True) as target:
        tmp = _new_export(target, "new")
        import jasco_export.output_folder as of

        of.shutil.rmtree, saved = rmtree_with_signal, of.shutil.rmtree
        try:
            target.commit(tmp)  # no Terminated: the signal is consumed and reported, the export is complete
        finally:
            of.shutil.rmtree = saved
        assert target.late_signal == "SIGTERM"
    assert json.loads((export_copy / "manifest.json").read_text())["marker"] == "new"
    assert sorted(p.name for p in export_copy.parent.iterdir()) == [export_copy.name]


def _stderr_reader(proc: subprocess.Popen) -> tp.Callable[[], str]:
    chunks: tp.List[str] = []

    def read() -> None:
        for chunk in iter(lambda: proc.stderr.read1(4096), b""):
            chunks.append(chunk.decode(errors="replace"))

    t = threading.Thread(target=read, daemon=True)
    t.start()
    return lambda: (t.join(timeout=30), "".join(chunks))[1]


@pytest.mark.parametrize("moment", ["before-replace", "during-replace"])
def test_sigterm_while_replacing_leaves_one_complete_export(moment, export_copy, tiny_hub):
    """K04: SIGTERM while --force replaces an export (a big old folder): --out is one complete export, the old
    one (exit 143) or the new one (exit 0, the swap had begun), with nothing half deleted and nothing beside it."""
    junk = export_copy / "junk"
    junk.mkdir()
    for i in range(20000):
        (junk / f"{i}").write_bytes(b"")
    old_manifest = (export_copy / "manifest.json").read_text()
    proc = subprocess.Popen([sys.executable, "-m", "jasco_export.cli", "--model", "jasco-tiny/chords-drums",
                             "--out", str(export_copy), "--force", "--no-e2e"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=RUN_ENV)
    err = _stderr_reader(proc)
    deadline = time.monotonic() + 300
    parent = export_copy.parent
    while proc.poll() is None and time.monotonic() < deadline:
        hidden = [p.name for p in parent.iterdir() if p.name.startswith(".cd.")]
        if moment == "before-replace" and any(".tmp-" in h for h in hidden):
            break
        if moment == "during-replace" and (not junk.exists() or any(".old-" in h for h in hidden)
                                           or (export_copy / "manifest.json").read_text() != old_manifest):
            break
        time.sleep(0.002)
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=120)
    text = err()
    assert "Traceback" not in text, text
    assert sorted(p.name for p in parent.iterdir()) == ["cd"], text  # no temp, old or lock folder left
    manifest = (export_copy / "manifest.json").read_text()
    if code == 143:
        assert manifest == old_manifest and len(list(junk.iterdir())) == 20000, text
    else:
        assert code == 0, text
        assert manifest != old_manifest and not junk.exists(), text
    if moment == "before-replace":
        assert code == 143, text
