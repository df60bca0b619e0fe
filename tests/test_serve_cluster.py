"""Scale-out on a real multi-node Ray cluster: two nodes on loopback (``ray.cluster_utils.Cluster``).

Two generator replicas, one per node (``max_replicas_per_node=1``); 16 requests spread over both, each equal to
its offline result; then the worker node is removed while requests run on it: those get 503 + Retry-After, the
others are served, nothing hangs. The ingress stays on the head node (``node:__internal_head__``).
"""
from __future__ import annotations

import io
import threading
import time
import typing as tp

import numpy as np
import pytest
import requests
import soundfile as sf

from serve_process import free_port

# slow: two Ray nodes, two replicas and a node loss take ~3 min on 2 idle cores, beyond CI's budget
pytestmark = [pytest.mark.service, pytest.mark.slow]
TIMEOUT = 240


@pytest.fixture(scope="module")
def cluster_service(tiny_engines):
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from jasco_serve.app import build_app
    from jasco_serve.config import ServeConfig

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=1)
    port = free_port()
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        cluster.wait_for_nodes()
        # one HTTP proxy: both "nodes" are this machine, so a proxy per node would compete for the port
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
        config = ServeConfig(tiny_engines.out, port=port, replicas=2, max_replicas_per_node=1, cpus_per_replica=1,
                             max_batch_prompts=4, batch_wait_ms=20, request_timeout=TIMEOUT, app_name="c").check()
        serve.run(build_app(config), name="c", route_prefix="/")
        yield {"url": f"http://127.0.0.1:{port}", "cluster": cluster, "worker": worker,
               "engines": tiny_engines.out}
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            cluster.shutdown()


def _replica_nodes() -> tp.Dict[str, str]:
    """Generator replica id (the X-Jasco-Replica header) → node id, from the GCS actor table."""
    import ray._private.state

    out = {}
    for actor in ray._private.state.actors().values():
        name = actor.get("Name") or ""
        if actor.get("State") == "ALIVE" and name.startswith("SERVE_REPLICA::c#JascoGenerator#"):
            out[name.rsplit("#", 1)[1]] = actor["Address"]["NodeID"]
    return out


def test_two_nodes_16_requests_equal_offline_then_a_node_is_lost(cluster_service):
    import ray

    from jasco_runtime import JascoPipeline

    url, worker = cluster_service["url"], cluster_service["worker"]
    nodes = _replica_nodes()
    assert len(nodes) == 2 and len(set(nodes.values())) == 2, nodes  # one replica on each node
    head_id = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeID"] != worker.node_id)
    assert set(nodes.values()) == {head_id, worker.node_id}

    pipe = JascoPipeline.from_dir(cluster_service["engines"], backend="onnxruntime", providers=["cpu"])
    jobs = [{"text": ["hard rock", "jazz trio", "funky groove", "slow ambient pad"][i % 4], "steps": 2 + i % 3,
             "seed": 100 + i, "chords": ["C:0 G:5", "Am:0 F:4"][i % 2]} for i in range(16)]
    answers: tp.Dict[int, requests.Response] = {}

    def one(i: int) -> None:
        answers[i] = requests.post(f"{url}/v1/generate", json=jobs[i], timeout=TIMEOUT)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=2 * TIMEOUT)
    assert sorted(answers) == list(range(16))
    for i, job in enumerate(jobs):
        r = answers[i]
        assert r.status_code == 200, r.text
        audio, _ = sf.read(io.BytesIO(r.content), dtype="float32", always_2d=True)
        want = pipe.generate([job["text"]], chords=job["chords"], steps=job["steps"], seed=job["seed"],
                             progress=False).audio[0]
        assert np.abs(audio.T - want).max() <= 1e-5, i
    # the requests were spread over both replicas, so over both nodes
    assert {answers[i].headers["X-Jasco-Replica"] for i in range(16)} == set(nodes), nodes

    # -- the worker node goes away under load ------------------------------------------------------
    results: tp.Dict[int, tp.Union[requests.Response, BaseException]] = {}

    def long_one(i: int) -> None:
        try:
            results[i] = requests.post(f"{url}/v1/generate", json={"text": "x", "steps": 200, "seed": i},
                                       timeout=TIMEOUT)
        except BaseException as exc:  # noqa: BLE001 — asserted below
            results[i] = exc

    threads = [threading.Thread(target=long_one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # requests running on both replicas
        m = requests.get(f"{url}/metrics", timeout=60).text
        if "jasco_queue_depth 8.0" in m:
            break
        time.sleep(0.2)
    time.sleep(1.0)
    cluster_service["cluster"].remove_node(worker, allow_graceful=False)
    for t in threads:
        t.join(timeout=2 * TIMEOUT)
    assert not any(t.is_alive() for t in threads), "a request hung after the node was removed"
    statuses = []
    for i in range(8):
        r = results[i]
        assert isinstance(r, requests.Response), r
        statuses.append(r.status_code)
        if r.status_code == 503:
            assert int(r.headers["Retry-After"]) >= 1 and "stopped" in r.json()["error"], r.text
        else:
            assert r.status_code == 200, r.text
    assert 503 in statuses and 200 in statuses, statuses
    # the service is still up on the head node
    r = requests.post(f"{url}/v1/generate", json={"text": "x", "steps": 1, "seed": 1}, timeout=TIMEOUT)
    assert r.status_code == 200
