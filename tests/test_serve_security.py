"""jasco-serve as a user deploys it: loopback-only Ray, API keys, bounded error lines, nothing left behind.

One `jasco-serve --api-key-file` process serves the module (the real command, so the loopback shim and the
re-exec are what is tested); a second one checks `--host 0.0.0.0` opens only the HTTP port.
"""
from __future__ import annotations

import io
import signal
import typing as tp

import pytest
import requests
import soundfile as sf

from serve_process import ServeProcess, is_loopback, left_behind

pytestmark = pytest.mark.service

KEY_A = "a3f1c9e07d5b4a2e8f6c1d0b9e7a5c3f"
KEY_B = "5e2d8c1b7a9f4e3d6c0b8a7f1e2d3c4b"
KEY_C = "c0ffee00c0ffee00c0ffee00c0ffee00"
BIG = 10 * 1024 * 1024  # the 10 MB bad uploads
TIMEOUT = 180


@pytest.fixture(scope="module")
def keyed(tiny_engines, tmp_path_factory):
    work = tmp_path_factory.mktemp("keyed")
    keys = work / "keys.txt"
    keys.write_text(f"# service keys\n{KEY_A}\n\n{KEY_B}\n")
    svc = ServeProcess(["--engines", str(tiny_engines.out), "--api-key-file", str(keys), "--cpus-per-replica", "0",
                        "--max-upload-mb", "16", "--request-timeout", "120"], work)
    try:
        yield svc.wait_ready(), keys
    finally:
        svc.cleanup()


def _auth(key: str) -> tp.Dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_every_ray_port_is_on_loopback(keyed):
    svc, _ = keyed
    sockets = svc.listening()
    names = {name for _, _, name in sockets}
    # the whole tree was seen: Ray's own servers and the Serve actors
    assert {"gcs_server", "raylet"} <= names and any("ProxyActor" in n for n in names), sockets
    assert any(port == svc.port for _, port, _ in sockets)
    outside = [s for s in sockets if not is_loopback(s[0])]
    assert not outside, f"listening beyond loopback: {outside}"


def test_host_0000_opens_only_the_http_port(tiny_engines, tmp_path):
    svc = ServeProcess(["--engines", str(tiny_engines.out), "--host", "0.0.0.0", "--cpus-per-replica", "0",
                        "--no-warmup"], tmp_path)
    try:
        svc.wait_ready()
        outside = [s for s in svc.listening() if not is_loopback(s[0])]
        assert outside and {port for _, port, _ in outside} == {svc.port}, outside
        assert requests.get(f"{svc.url}/healthz", timeout=30).status_code == 200
        assert svc.stop() == 0, svc.log[-3000:]
        assert left_behind(svc.tmp) == [], "the Ray session folder was left behind"
        assert "\x1b[" not in svc.log and "Traceback" not in svc.log and "graceful_shutdown" not in svc.log, svc.log
    finally:
        svc.cleanup()


def test_api_keys(keyed):
    svc, _ = keyed
    url = svc.url
    job = {"text": "hard rock", "steps": 1, "seed": 3}
    for headers in ({}, _auth("wrong-key-0123456789abcdef"), {"Authorization": KEY_A}, {"Authorization": "Basic x"}):
        for r in (requests.post(f"{url}/v1/generate", json=job, headers=headers, timeout=TIMEOUT),
                  requests.get(f"{url}/v1/models", headers=headers, timeout=60)):
            assert r.status_code == 401, (headers, r.status_code, r.text)
            assert r.headers["content-type"] == "application/json" and "Bearer" in r.headers["www-authenticate"]
            assert set(r.json()) == {"error"} and "API key" in r.json()["error"]
    assert requests.get(f"{url}/metrics", timeout=60).status_code == 401  # --metrics-public not given
    # open routes
    assert requests.get(f"{url}/healthz", timeout=60).json() == {"status": "ok"}
    assert requests.get(f"{url}/readyz", timeout=60).status_code == 200
    assert requests.get(f"{url}/", timeout=60).status_code == 200
    assert requests.get(f"{url}/static/app.js", timeout=60).status_code == 200
    # either key works
    for key in (KEY_A, KEY_B, KEY_A):
        r = requests.post(f"{url}/v1/generate", json=job, headers=_auth(key), timeout=TIMEOUT)
        assert r.status_code == 200, r.text
        assert sf.info(io.BytesIO(r.content)).samplerate == 32000
    assert requests.get(f"{url}/v1/models", headers=_auth(KEY_B), timeout=60).json()["api_keys"] is True
    metrics = requests.get(f"{url}/metrics", headers=_auth(KEY_B), timeout=60).text
    from jasco_serve.auth import key_id

    assert f'jasco_key_requests_total{{key_id="{key_id(KEY_A)}",status="200"}} 2.0' in metrics, metrics
    # B: one generation and one /v1/models
    assert f'jasco_key_requests_total{{key_id="{key_id(KEY_B)}",status="200"}} 2.0' in metrics
    assert 'jasco_key_requests_total{key_id="none",status="401"}' in metrics
    for key in (KEY_A, KEY_B):
        assert key not in metrics and key[:16] not in metrics
    # keys never logged: not in the command's output nor in any Ray log of the session
    assert KEY_A not in svc.log and KEY_B not in svc.log
    for f in svc.tmp.rglob("*"):
        if f.is_file() and f.stat().st_size < 50 * 2**20:
            data = f.read_bytes()
            assert KEY_A.encode() not in data and KEY_B.encode() not in data, f


def test_sighup_rereads_the_key_file(keyed):
    svc, keys = keyed
    url, job = svc.url, {"text": "x", "steps": 1, "seed": 1}
    keys.write_text(f"{KEY_C}\n")
    svc.proc.send_signal(signal.SIGHUP)
    svc.wait_for("SIGHUP: 1 API key(s) loaded")
    assert requests.post(f"{url}/v1/generate", json=job, headers=_auth(KEY_A), timeout=TIMEOUT).status_code == 401
    assert requests.post(f"{url}/v1/generate", json=job, headers=_auth(KEY_C), timeout=TIMEOUT).status_code == 200
    keys.write_text("")  # an unusable file: the keys in use stay
    svc.proc.send_signal(signal.SIGHUP)
    svc.wait_for("the previous keys stay in use")
    assert requests.post(f"{url}/v1/generate", json=job, headers=_auth(KEY_C), timeout=TIMEOUT).status_code == 200
    keys.write_text(f"{KEY_A}\n{KEY_B}\n")
    svc.proc.send_signal(signal.SIGHUP)
    svc.wait_for("SIGHUP: 2 API key(s) loaded")
    assert svc.proc.poll() is None


def test_error_lines_are_bounded_with_10_mb_bad_uploads(keyed):
    """A 10 MB bad field or file gives a 400 whose one line is ≤ 300 characters and repeats none of it."""
    svc, _ = keyed
    gen, h = f"{svc.url}/v1/generate", _auth(KEY_A)
    chords = "(" + "Q" * BIG
    cases = [
        requests.post(gen, files={"chords": (None, chords), "text": (None, "x")}, headers=h, timeout=TIMEOUT),
        requests.post(gen, json={"text": "x", "chords": "C-0 " + "Q" * BIG}, headers=h, timeout=TIMEOUT),
        requests.post(gen, data=b'{"text": "' + b"Q" * BIG, headers={**h, "Content-Type": "application/json"},
                      timeout=TIMEOUT),
        requests.post(gen, files={"drums": ("d.wav", b"RIFF" + b"Q" * BIG)}, data={"text": "x"}, headers=h,
                      timeout=TIMEOUT),
        requests.post(gen, json={"text": "x", "solver": "Q" * BIG}, headers=h, timeout=TIMEOUT),
        requests.post(gen, files={"Q" * 5000: (None, "1"), "text": (None, "x")}, headers=h, timeout=TIMEOUT),
    ]
    for r in cases:
        assert r.status_code == 400, r.text[:500]
        body = r.json()
        assert set(body) == {"error"} and len(body["error"]) <= 300, len(body["error"])
        assert "\n" not in body["error"] and "Q" * 61 not in body["error"], body["error"]
        assert len(r.content) < 1000
    assert "Q" * 61 not in svc.log  # nor in the command's log


def test_readme_multipart_example_quoting(keyed, tmp_path):
    """The README's multipart chords use --form-string: curl would read "(" as the start of a nested part."""
    import shutil
    import subprocess

    if shutil.which("curl") is None:
        pytest.skip("curl not installed")
    svc, _ = keyed
    out = tmp_path / "clip.wav"
    r = subprocess.run(["curl", "-s", "-o", str(out), "-w", "%{http_code}", f"{svc.url}/v1/generate",
                        "-H", f"Authorization: Bearer {KEY_A}", "-F", "text=hip hop beat",
                        "--form-string", "chords=(C, 0.0), (D, 2.0)", "-F", "steps=1"],
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert r.stdout == "200", (r.stdout, out.read_bytes()[:300] if out.exists() else b"")
    assert sf.info(str(out)).duration == pytest.approx(10.0)


def test_web_page_asks_for_the_key_once(keyed, tmp_path):
    """The page shows the key form on the first 401, keeps the key in sessionStorage and sends it after."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    from test_serve_http import _browser

    svc, _ = keyed
    browser = _browser(tmp_path)
    try:
        browser.get(svc.url + "/")
        wait = WebDriverWait(browser, TIMEOUT)
        wait.until(EC.visibility_of_element_located((By.ID, "key-form")))
        assert "API key" in browser.find_element(By.ID, "error").text
        browser.find_element(By.ID, "api-key").send_keys(KEY_B)
        browser.find_element(By.ID, "key-submit").click()
        wait.until(lambda b: "jasco-tiny/chords-drums" in b.find_element(By.ID, "model-info").text)
        assert browser.execute_script("return sessionStorage.getItem('jasco-serve-api-key')") == KEY_B
        assert not browser.find_element(By.ID, "key-form").is_displayed()
        steps = browser.find_element(By.ID, "steps")
        steps.clear()
        steps.send_keys("1")
        browser.find_element(By.ID, "submit").click()
        wait.until(EC.visibility_of_element_located((By.ID, "result")))
        assert not browser.find_element(By.ID, "error").is_displayed()
        browser.refresh()  # same tab: the key is still there, no prompt
        wait.until(lambda b: "jasco-tiny/chords-drums" in b.find_element(By.ID, "model-info").text)
        assert not browser.find_element(By.ID, "key-form").is_displayed()
    finally:
        browser.quit()
