"""Sweep cases of issue 20 §4 fixed last: Accept-header parsing (R04/R05) and a short many-channel wav (A02/M08)."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf


@pytest.mark.parametrize("accept, json_wanted", [
    (None, False), ("", False), ("audio/wav", False), ("application/json", True),
    ("APPLICATION/JSON", True),  # R05: media types are case-insensitive
    ("application/json;q=0, audio/wav", False),  # R04: q=0 is "not acceptable"
    ("audio/wav;q=0.5, application/json;q=0.9", True), ("application/json;q=0.2, audio/*", False),
    ("*/*", False), ("application/*", True), ("text/html, application/json;q=0.8, */*;q=0.1", True),
])
def test_accept_header_follows_q_values_and_case(accept, json_wanted):
    from jasco_serve.http_io import wants_json

    assert wants_json(accept) is json_wanted


def test_a_six_channel_one_sample_wav_is_drums_not_a_transposed_array(tiny_engines, tmp_path):
    """A02/M08: a valid 6-channel, 1-sample wav was refused as "[samples, channels]"."""
    from jasco_runtime.conditioning import ConditionProvider
    from jasco_runtime.errors import InputError
    from jasco_runtime.export_folder import ExportFolder
    from jasco_runtime.request import GenerationRequest

    path = tmp_path / "six.wav"
    sf.write(str(path), np.full((1, 6), 0.25, np.float32), 32000, subtype="FLOAT")
    provider = ConditionProvider(ExportFolder.open(tiny_engines.out))
    req = GenerationRequest(["x"], drums=path, steps=1).resolved(provider.folder.defaults)
    drums = provider.prepare(req).windows[0].drums
    assert drums.shape == (320000,) and drums[0] == pytest.approx(0.25, abs=0.05) and not drums[100:].any()
    array = GenerationRequest(["x"], drums=np.zeros((1000, 2), np.float32), drums_sample_rate=32000, steps=1)
    with pytest.raises(InputError, match=r"look like \[samples, channels\]"):  # an array of unknown layout: still
        provider.prepare(array.resolved(provider.folder.defaults))


def test_a_signal_once_the_outputs_exist_never_says_nothing_was_written(tiny_engines, tmp_path):
    """S09/S10 (fresh sweep): SIGTERM as soon as the first output exists said "nothing was written" with exit 143
    while every wav was complete (the signal arrived after the command had returned).  Now the exit code and the
    message follow what is on disk: exit 0 with every output, or 143 with none."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import ROOT

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "runtime"), str(ROOT / "export")])}
    out = tmp_path / "o"
    out.mkdir()
    prompts = sum([["--text", f"clip {i}"] for i in range(8)], [])
    proc = subprocess.Popen([sys.executable, "-m", "jasco_runtime.cli", "--engines", str(tiny_engines.out), *prompts,
                             "--steps", "1", "--no-progress", "--out", str(out / "t.wav"),
                             "--save-latents", str(out / "t.npy")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 300
    while not (out / "t_0.wav").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    text = err.decode(errors="replace")
    wavs = sorted(p.name for p in out.glob("t_*.wav"))
    if proc.returncode == 0:
        assert len(wavs) == 8 and (out / "t.npy").is_file(), text
        assert "nothing was written" not in text, text
    else:
        assert proc.returncode == 143 and wavs == [] and "nothing was written" in text, (proc.returncode, text)
    assert "Traceback" not in text, text
