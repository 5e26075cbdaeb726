"""Where a sweep runs: address precedence, a clear error without a cluster, the deploy/ manifests, and a
tiny study on a real three-node Ray cluster (``ray.cluster_utils.Cluster``: separate raylets on this machine)."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest
import yaml

from kdtune.config import load_study, with_overrides
from kdtune.errors import KdtuneError
from kdtune.sweep import init_ray, resolve_address

ROOT = Path(__file__).resolve().parents[1]
# Each worker node gets its own loopback address, so Tune's per-result ``node_ip`` names the node a trial
# ran on (the head keeps the machine's IP). Ray's state API (list_actors: pid -> node) would do the same
# but needs the dashboard, which this install cannot start.
WORKER_IPS = ("127.0.0.2", "127.0.0.3")
SPREAD_EPOCHS = 150  # about 3 s per trial

BASE = {
    "name": "tiny_cluster",
    "seed": 0,
    "dataset": {"name": "mnist_5k", "n_train": 400, "n_val": 100, "n_test": 100},
    "teacher": {"model": {"name": "mlp", "hidden": [32]}, "epochs": 1},
    "student": {"model": {"name": "mlp", "hidden": [16]}, "epochs": 1, "lr": 5.0e-3},
    "method": {"name": "hinton", "temperature": 4.0, "alpha": 0.5},
    "evaluation": {
        "eps": [0.1],
        "pgd_steps": 2,
        "n_jacobian": 16,
        "latency": {"batch_sizes": [1], "warmup": 2, "repeats": 1, "n_calls": 2},
    },
    "search": {
        "space": {"method.temperature": {"type": "float", "low": 1.0, "high": 8.0, "log": True}},
        "objectives": [{"metric": "val/acc", "mode": "max"}, {"metric": "val/robust_acc@0.1", "mode": "max"}],
        "sampler": {"name": "random"},
        "budget": 3,
        "max_concurrent": 3,
    },
    "resources": {"cpu": 1, "max_failures": 0},
}


# --- no cluster needed -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "configured", "env", "expected"),
    [
        ("ray://flag:10001", "yaml:6379", "env:6379", ("ray://flag:10001", "--address")),
        (None, "yaml:6379", "env:6379", ("yaml:6379", "ray.address")),
        (None, None, "env:6379", ("env:6379", "$RAY_ADDRESS")),
        (None, None, None, (None, "default")),
        ("local", "yaml:6379", "env:6379", (None, "--address")),  # Ray's own word for "start one here"
    ],
)
def test_address_precedence(flag, configured, env, expected, monkeypatch):
    if env:
        monkeypatch.setenv("RAY_ADDRESS", env)
    else:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert resolve_address(flag, configured) == expected


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("source", ["flag", "yaml", "env"])
def test_no_cluster_at_the_address_is_one_line_naming_it_and_the_fix(source, monkeypatch):
    import ray

    ray.shutdown()  # init_ray reuses a Ray already running in this process
    address = f"127.0.0.1:{_free_port()}"  # nothing listens there: Ray itself would retry for minutes
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if source == "env":
        monkeypatch.setenv("RAY_ADDRESS", address)
    with pytest.raises(KdtuneError) as err:
        init_ray(address if source == "flag" else None, configured=address if source == "yaml" else None)
    message = str(err.value)
    assert "\n" not in message and address in message and "ray start --head" in message
    fix = {"flag": "drop --address", "yaml": "remove ray.address", "env": "unset RAY_ADDRESS"}[source]
    assert fix in message
    assert not ray.is_initialized()


def test_a_dashboard_url_is_refused_with_the_address_kdtune_needs():
    import ray

    ray.shutdown()
    with pytest.raises(KdtuneError, match="dashboard URL.*host:6379"):
        init_ray("http://127.0.0.1:8265")


def test_deploy_manifests_parse_and_run_a_study_that_exists():
    docs = [d for d in yaml.safe_load_all((ROOT / "deploy/k8s/rayjob.yaml").read_text()) if d]
    assert all(d["apiVersion"] and d["metadata"]["name"] for d in docs)
    by_part = {}
    for d in docs:  # the CronJob applies the file with -l kdtune/part=sweep: exactly the RayJob
        by_part.setdefault(d["metadata"]["labels"]["kdtune/part"], []).append(d["kind"])
    assert by_part["sweep"] == ["RayJob"] and "CronJob" in by_part["scheduler"]
    spec = docs[0]["spec"]
    assert "python -m kdtune" in spec["entrypoint"] and "--address auto" in spec["entrypoint"]
    containers = [c for g in spec["rayClusterSpec"]["workerGroupSpecs"] for c in g["template"]["spec"]["containers"]]
    assert any(c["resources"]["limits"].get("nvidia.com/gpu") == 1 for c in containers)

    cron = [ln for ln in (ROOT / "deploy/cron/kdtune-sweep.cron").read_text().splitlines()
            if ln.strip() and not ln.startswith("#") and "=" not in ln.split()[0]]
    assert len(cron) == 1 and len(cron[0].split()) > 5  # five time fields, then the command
    texts = [(ROOT / f).read_text() for f in ("deploy/ray-job.sh", "deploy/cron/kdtune-sweep.cron", "deploy/k8s/rayjob.yaml")]
    studies = {m for text in texts for m in re.findall(r"studies/[\w.-]+\.yaml", text)}
    assert studies
    for study in studies:
        load_study(ROOT / study)  # the examples name a study that loads


# --- a real multi-node cluster ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    import logging

    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()  # another test module may have left a local Ray in this process
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        for ip in WORKER_IPS:  # 1 CPU per node: three concurrent trials must use three nodes
            c.add_node(num_cpus=1, node_ip_address=ip)
        c.wait_for_nodes()
        ray.init(address=c.address, log_to_driver=False, logging_level=logging.WARNING)
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


def _write_study(tmp_path: Path):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(BASE))
    return load_study(path)


def _node_of_each_trial(root: Path) -> dict[str, str]:
    """trial id -> the IP of the node its final result came from (Tune's own ``node_ip`` field)."""
    nodes = {}
    for result_json in root.rglob("result.json"):
        lines = [json.loads(line) for line in result_json.read_text().splitlines() if line.strip()]
        if lines:
            nodes[str(lines[-1]["trial_id"])] = lines[-1]["node_ip"]
    return nodes


@pytest.mark.slow
def test_init_ray_connects_to_a_running_cluster(cluster):
    import ray

    ray.shutdown()  # exercise the connect path itself, not the "already initialized" one
    lines = []
    init_ray(cluster.address, echo=lines.append)
    assert ray.is_initialized()
    assert lines == [f"Ray: cluster at {cluster.address} (from --address; 3 node(s), 3 CPU(s), 0 GPU(s))"]


@pytest.mark.slow
def test_a_study_spreads_its_trials_over_the_nodes_of_a_cluster(cluster, tmp_path, monkeypatch):
    import ray

    from kdtune.study import run_study

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # Trials long enough to overlap: three actors start at once on 2 cores, seconds apart (the head node's
    # raylet has a worker prestarted); with 1-epoch trials the first one up ran all three on its node.
    cfg = with_overrides(_write_study(tmp_path), {"student.epochs": SPREAD_EPOCHS})
    lines = []
    outcome = run_study(cfg, workdir=tmp_path, address=cluster.address, echo=lines.append)

    assert [r.status for r in outcome.records] == ["COMPLETE"] * 3
    assert outcome.report["report_html"].stat().st_size > 0
    assert any(line.startswith("Ray: ") and "3 node(s)" in line for line in lines)

    nodes = _node_of_each_trial(tmp_path)
    assert set(nodes) == {r.trial_id for r in outcome.records}
    cluster_ips = {n["NodeManagerAddress"] for n in ray.nodes()}
    assert set(nodes.values()) <= cluster_ips
    assert len(set(nodes.values())) >= 2, nodes


@pytest.mark.slow
def test_moasha_stops_trials_running_on_several_nodes(cluster, tmp_path, monkeypatch):
    """The scheduler runs in the driver, the rung measurements in the trials on their nodes: the trials stopped
    early are PRUNED in Optuna and in the records, with the rung results the driver stored for every trial."""
    import optuna

    from kdtune import store
    from kdtune.study import run_study

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = with_overrides(_write_study(tmp_path), {
        "student.epochs": SPREAD_EPOCHS, "search.budget": 6,
        "search.scheduler": {"name": "moasha", "min_epochs": 1, "reduction_factor": 3, "rung_subset": 50},
    })
    outcome = run_study(cfg, workdir=tmp_path, address=cluster.address, echo=lambda line: None)

    statuses = {r.trial_id: r.status for r in outcome.records}
    assert set(statuses.values()) <= {"COMPLETE", "PRUNED"} and len(statuses) == 6
    assert "PRUNED" in statuses.values() and "COMPLETE" in statuses.values(), statuses
    nodes = _node_of_each_trial(tmp_path)
    assert len(set(nodes.values())) >= 2, nodes
    study = optuna.load_study(study_name=cfg.name, storage=f"sqlite:///{tmp_path / '.kdtune' / 'optuna.db'}")
    states = {t.user_attrs["kdtune.record"]["trial_id"]: t.state.name for t in study.get_trials()}
    assert states == {t: "COMPLETE" if s == "COMPLETE" else "PRUNED" for t, s in statuses.items()}
    rungs = store.read_rungs(study)
    assert set(rungs) == set(statuses)  # every trial reached the first rung, wherever it ran
    for r in outcome.records:
        if r.status == "PRUNED":
            assert r.epochs in rungs[r.trial_id] and r.epochs < SPREAD_EPOCHS
