"""Several export folders in one service (``--engines A --engines B …``): the ``model`` field, ``/v1/models``,
Ray Serve model multiplexing with least-recently-used eviction; and ``--replicas auto`` (autoscaling).

One local Ray instance (loopback) for the module; one generator replica holding at most 2 models: the default
(always loaded) plus one more, so asking for the other two models in turn evicts and reloads them.
"""
from __future__ import annotations

import io
import shutil
import threading
import time
import typing as tp

import numpy as np
import pytest
import requests
import soundfile as sf

from serve_process import free_port

pytestmark = pytest.mark.service
TIMEOUT = 180


@pytest.fixture(scope="module")
def models_service(tiny_engines, melody_engines, tmp_path_factory):
    import ray
    from ray import serve

    from jasco_serve.app import build_app
    from jasco_serve.config import ServeConfig

    copy = tmp_path_factory.mktemp("copy") / "cd-copy"  # the same model id as the default: named by its folder
    shutil.copytree(tiny_engines.out, copy)
    port = free_port()
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        config = ServeConfig(tiny_engines.out, more_engines=(melody_engines, copy), port=port, cpus_per_replica=0,
                             max_models_per_replica=2, max_batch_prompts=4, batch_wait_ms=20,
                             request_timeout=TIMEOUT, app_name="mm").check()
        serve.run(build_app(config), name="mm", route_prefix="/")
        yield {"url": f"http://127.0.0.1:{port}", "cd": tiny_engines.out, "cdm": melody_engines, "copy": copy}
    finally:
        serve.shutdown()
        ray.shutdown()


def _loaded() -> tp.List[str]:
    from ray import serve

    return serve.get_deployment_handle("JascoGenerator", app_name="mm").loaded_models.remote().result(timeout_s=60)


def _audio(r: requests.Response) -> np.ndarray:
    assert r.status_code == 200, r.text
    audio, sr = sf.read(io.BytesIO(r.content), dtype="float32", always_2d=True)
    assert sr == 32000
    return audio.T


def test_models_listed_and_chosen_by_field(models_service, tmp_path):
    from jasco_runtime import JascoPipeline

    url = models_service["url"]
    m = requests.get(f"{url}/v1/models", timeout=60).json()
    names = [x["name"] for x in m["models"]]
    assert names == ["jasco-tiny/chords-drums", "jasco-tiny/chords-drums-melody", "cd-copy"]
    assert m["default_model"] == "jasco-tiny/chords-drums" and m["model"] == "jasco-tiny/chords-drums"
    assert [x["conditioners"] for x in m["models"]][1] == ["chords", "drums", "melody", "text"]
    assert "model" in m["fields"] and m["max_models_per_replica"] == 2
    assert _loaded() == ["jasco-tiny/chords-drums"]  # only the default before any request

    melody = tmp_path / "salience.npy"
    np.save(melody, (np.random.default_rng(5).random((53, 300)) > 0.95).astype(np.float32))
    job = {"text": "hard rock", "chords": "C:0 G:5", "steps": 2, "seed": 9}
    offline = {name: JascoPipeline.from_dir(models_service[key], backend="onnxruntime", providers=["cpu"])
               for name, key in (("cd", "cd"), ("cdm", "cdm"))}
    want_cd = offline["cd"].generate(["hard rock"], chords="C:0 G:5", steps=2, seed=9, progress=False).audio[0]
    want_cdm = offline["cdm"].generate(["hard rock"], chords="C:0 G:5", melody=melody, steps=2, seed=9,
                                       progress=False).audio[0]

    def form(model: tp.Optional[str]) -> requests.Response:
        data = {k: str(v) for k, v in job.items()}
        if model:
            data["model"] = model
        return requests.post(f"{url}/v1/generate", data=data, files={"melody": ("m.npy", melody.read_bytes())},
                             timeout=TIMEOUT)

    # default (no field) and explicit; JSON and multipart
    assert np.abs(_audio(requests.post(f"{url}/v1/generate", json=job, timeout=TIMEOUT)) - want_cd).max() <= 1e-5
    r = requests.post(f"{url}/v1/generate", json={**job, "model": "cd-copy"}, timeout=TIMEOUT)
    assert np.abs(_audio(r) - want_cd).max() <= 1e-5
    assert _loaded() == ["jasco-tiny/chords-drums", "cd-copy"]
    # the melody model through a form: loading it evicts cd-copy (room for one besides the default)
    assert np.abs(_audio(form("jasco-tiny/chords-drums-melody")) - want_cdm).max() <= 1e-5
    assert _loaded() == ["jasco-tiny/chords-drums", "jasco-tiny/chords-drums-melody"]
    r = requests.post(f"{url}/v1/generate", json={**job, "model": "cd-copy"}, timeout=TIMEOUT)  # reloaded
    assert np.abs(_audio(r) - want_cd).max() <= 1e-5
    assert _loaded() == ["jasco-tiny/chords-drums", "cd-copy"]
    # the default model refuses the melody upload (its own checks), an unknown model is a 400
    r = form(None)
    assert r.status_code == 400 and "no melody conditioner" in r.json()["error"]
    r = requests.post(f"{url}/v1/generate", json={**job, "model": "jasco-large"}, timeout=TIMEOUT)
    assert r.status_code == 400 and "unknown model 'jasco-large'" in r.json()["error"]
    assert "cd-copy" in r.json()["error"]
    metrics = requests.get(f"{url}/metrics", timeout=60).text
    assert 'jasco_model_requests_total{model="cd-copy"} 2.0' in metrics


def test_concurrent_requests_for_two_models_while_evicting(models_service):
    """Requests for the two non-default models at once: each is answered (an evicted model is closed only
    after its solves finish), each equal to its model's offline result."""
    from jasco_runtime import JascoPipeline

    url = models_service["url"]
    want = JascoPipeline.from_dir(models_service["cd"], backend="onnxruntime", providers=["cpu"]).generate(
        ["jazz trio"], steps=3, seed=4, progress=False).audio[0]
    answers: tp.Dict[int, tp.Any] = {}

    def one(i: int) -> None:
        model = ["cd-copy", "jasco-tiny/chords-drums-melody", "jasco-tiny/chords-drums"][i % 3]
        try:
            answers[i] = (model, requests.post(f"{url}/v1/generate", json={"text": "jazz trio", "steps": 3, "seed": 4,
                                                                           "model": model}, timeout=TIMEOUT))
        except BaseException as exc:  # noqa: BLE001
            answers[i] = (model, exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=2 * TIMEOUT)
    assert len(answers) == 9
    for model, r in answers.values():
        assert isinstance(r, requests.Response) and r.status_code == 200, (model, r)
        if model != "jasco-tiny/chords-drums-melody":
            assert np.abs(_audio(r) - want).max() <= 1e-5


@pytest.mark.slow  # a second replica and a sustained load: ~2 min on 2 idle cores, beyond CI's budget
def test_replicas_auto_scales_up_under_load(models_service, tiny_engines):
    """--replicas auto: Ray Serve autoscaling between 1 and 2 replicas on the requests each one holds."""
    from ray import serve

    from jasco_serve.app import build_app
    from jasco_serve.config import ServeConfig

    cfg = ServeConfig(tiny_engines.out, replicas="auto", min_replicas=1, max_replicas=2, target_ongoing_requests=1,
                      cpus_per_replica=0, max_batch_prompts=1, batch_wait_ms=0, request_timeout=TIMEOUT,
                      app_name="auto", route_prefix="/auto").check()
    serve.run(build_app(cfg), name="auto", route_prefix="/auto")
    try:
        def replicas() -> int:
            st = serve.status().applications["auto"].deployments["JascoGenerator"]
            return sum(n for state, n in st.replica_states.items() if str(state).endswith("RUNNING"))

        assert replicas() == 1
        url = f"{models_service['url']}/auto/v1/generate"
        stop = threading.Event()

        def client() -> None:
            while not stop.is_set():
                requests.post(url, json={"text": "x", "steps": 30, "seed": 1}, timeout=TIMEOUT)

        threads = [threading.Thread(target=client, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 150
        try:
            while replicas() < 2:
                assert time.monotonic() < deadline, "autoscaling did not add a replica under 4 concurrent clients"
                time.sleep(1)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=TIMEOUT)
        assert requests.get(f"{models_service['url']}/auto/v1/models", timeout=60).json()["replica_range"] == [1, 2]
    finally:
        serve.delete("auto")
