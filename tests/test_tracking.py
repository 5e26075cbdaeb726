"""The MLflow tracker: names MLflow accepts, and store failures that never stop a sweep."""

import logging

import pytest
from mlflow.tracking import MlflowClient

from kdtune.metrics import mlflow_key as metric_key
from kdtune.tracking import Outcome, Tracker


def test_metric_keys_are_made_acceptable_to_mlflow():
    assert metric_key("val/robust_acc@0.1") == "val/robust_acc_at_0.1"
    assert metric_key("report.reference.rows.6.metrics.test/autoattack_acc@0.1") == (
        "report.reference.rows.6.metrics.test/autoattack_acc_at_0.1"
    )
    assert metric_key("a|b*c") == "a_b_c"


def test_params_tags_and_metrics_with_odd_names_are_logged(tmp_path, mlflow_uri):
    uri = mlflow_uri
    tracker = Tracker(uri, "odd", artifact_root=tmp_path / "art")
    tracker.start_sweep("sweep", {"report.rows.0.metrics.test/acc@0.1": 1}, {"study": "odd"})
    tracker.start_trial("t1", {"x@y": 2}, {"tag@1": "v"})
    tracker.log_metrics("t1", {"val/robust_acc@0.1": 0.5}, step=1)
    tracker.end_trial("t1")
    tracker.end_sweep()
    assert tracker.failures == []
    run = MlflowClient(uri).get_run(tracker.children["t1"])
    assert run.data.params == {"x_at_y": "2"} and run.data.metrics == {"val/robust_acc_at_0.1": 0.5}
    assert run.data.tags["tag_at_1"] == "v" and run.info.status == "FINISHED"


KIND = "mlflow.experimentKind"  # MLflow's experiment-kind tag (its UI's ExperimentKind values)


def test_a_new_experiment_is_marked_as_model_training(tmp_path, mlflow_uri):
    tracker = Tracker(mlflow_uri, "new", artifact_root=tmp_path / "art")
    experiment = MlflowClient(mlflow_uri).get_experiment_by_name("new")
    assert experiment.experiment_id == tracker.experiment_id
    assert experiment.tags[KIND] == "custom_model_development"


def test_the_runs_link_names_the_experiment_and_the_model_training_view(tmp_path, mlflow_uri):
    tracker = Tracker(mlflow_uri, "linked", artifact_root=tmp_path / "art")
    link = tracker.runs_link()
    assert link.startswith(f"http://127.0.0.1:5000/#/experiments/{tracker.experiment_id}?workflowType=machine_learning")
    assert link.endswith(f"(after: mlflow ui --backend-store-uri {mlflow_uri} --host 127.0.0.1)")


def test_a_reused_experiment_gets_the_mark_if_missing_and_keeps_a_users_own(tmp_path, mlflow_uri):
    client = MlflowClient(mlflow_uri)
    older = client.create_experiment("older")  # as kdtune made it before the mark
    own = client.create_experiment("own", tags={KIND: "genai_development"})
    assert Tracker(mlflow_uri, "older", artifact_root=tmp_path / "art").experiment_id == older
    assert Tracker(mlflow_uri, "own", artifact_root=tmp_path / "art").experiment_id == own
    assert client.get_experiment(older).tags[KIND] == "custom_model_development"
    assert client.get_experiment(own).tags[KIND] == "genai_development"


def test_a_resumed_sweep_settles_the_runs_of_trials_that_finished_before_the_kill(tmp_path, mlflow_uri):
    uri = mlflow_uri
    before = Tracker(uri, "killed", artifact_root=tmp_path / "art")
    before.start_sweep("sweep-001", {}, {})
    for trial_id in ("done", "lost", "lost_failed", "unfinished"):
        before.start_trial(trial_id, {}, {})
    before.log_metrics("done", {"val/acc": 0.5}, step=3)
    before.end_trial("done")  # the driver was killed before the other trials' last writes

    weights = tmp_path / "lost.pt"
    weights.write_bytes(b"weights")
    after = Tracker(uri, "killed", artifact_root=tmp_path / "art")  # the resumed run of the study
    after.start_sweep("sweep-001", {}, {})
    after.settle_trials({"done": Outcome({"val/acc": 0.9}), "lost": Outcome({"val/acc": 0.8}, weights=weights),
                         "lost_failed": Outcome({}, "loss became non-finite"), "other-sweep": Outcome({}),
                         "never_made": Outcome({"val/acc": 0.7}, params={"method.alpha": 0.5}, tags={"study": "k"})},
                        step=3, weights_as="student.pt")
    after.end_sweep()
    assert after.failures == []
    client = MlflowClient(uri)
    runs = {trial_id: client.get_run(run_id) for trial_id, run_id in after.children.items()}
    assert runs["done"].info.status == "FINISHED" and runs["done"].data.metrics == {"val/acc": 0.5}  # left alone
    assert runs["lost"].info.status == "FINISHED" and runs["lost"].data.metrics == {"val/acc": 0.8}
    assert [(m.step, m.value) for m in client.get_metric_history(runs["lost"].info.run_id, "val/acc")] == [(3, 0.8)]
    assert [a.path for a in client.list_artifacts(runs["lost"].info.run_id)] == ["student.pt"]
    assert client.list_artifacts(runs["lost_failed"].info.run_id) == []
    assert runs["lost_failed"].info.status == "FAILED" and runs["lost_failed"].data.tags["error"] == "loss became non-finite"
    assert runs["unfinished"].info.status == "KILLED"  # not finished in the study's storage: end_sweep's rule
    made = runs["never_made"]  # finished, but the killed driver's queued writes never reached the store
    assert made.info.status == "FINISHED" and made.data.metrics == {"val/acc": 0.7}
    assert made.data.params == {"method.alpha": "0.5"} and made.data.tags["study"] == "k"
    assert made.data.tags["mlflow.parentRunId"] == after.parent_id and made.data.tags["trial_id"] == "never_made"
    assert "other-sweep" not in after.children  # no params given: not a trial of this study's sweeps


def test_end_sweep_looks_up_only_the_runs_it_did_not_end_itself(tmp_path, mlflow_uri):
    uri = mlflow_uri
    tracker = Tracker(uri, "ends", artifact_root=tmp_path / "art")
    tracker.start_sweep("sweep", {}, {})
    for trial_id in ("ended", "retried", "interrupted"):
        tracker.start_trial(trial_id, {}, {})
    tracker.end_trial("ended")
    tracker.end_trial("retried")
    tracker.start_trial("retried", {}, {})  # its worker died: Tune runs it again in the same run
    looked_up, real_get_run = [], tracker.client.get_run
    tracker.client.get_run = lambda run_id: looked_up.append(run_id) or real_get_run(run_id)
    tracker.end_sweep()
    assert tracker.failures == []
    assert sorted(looked_up) == sorted(tracker.children[t] for t in ("retried", "interrupted"))
    status = {t: MlflowClient(uri).get_run(run_id).info.status for t, run_id in tracker.children.items()}
    assert status == {"ended": "FINISHED", "retried": "KILLED", "interrupted": "KILLED"}


def test_a_failing_store_is_reported_not_raised(tmp_path, caplog, mlflow_uri):
    tracker = Tracker(mlflow_uri, "broken", artifact_root=tmp_path / "art")
    tracker.start_sweep("sweep", {}, {})
    tracker.start_trial("t1", {}, {})

    class Down:
        def __getattr__(self, name):
            raise ConnectionError("store unreachable")

    tracker.client = Down()
    with caplog.at_level(logging.WARNING):
        tracker.log_metrics("t1", {"val/acc": 0.9})
        tracker.end_trial("t1")
        tracker.end_sweep()
    assert len(tracker.failures) == 3 and "store unreachable" in tracker.failures[0]
    assert caplog.text.count("the sweep goes on") == 1  # warned once, not per write


def test_logging_a_model_leaves_the_process_tracking_uri_alone(tmp_path, monkeypatch, mlflow_uri):
    import os

    import numpy as np

    from kdtune.data import MNIST_INFO
    from kdtune.models import build_model

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracker = Tracker(mlflow_uri, "models", artifact_root=tmp_path / "art")
    tracker.start_sweep("sweep", {}, {})
    tracker.start_trial("t1", {}, {})
    model = build_model("mlp", {"hidden": [4]}, MNIST_INFO).eval()
    tracker.log_model("t1", model, np.zeros((2, 1, 28, 28), np.float32))
    assert tracker.failures == [] and "MLFLOW_TRACKING_URI" not in os.environ  # a later study keeps its own store
    assert "student/MLmodel" in {a.path for a in MlflowClient(tracker.uri).list_artifacts(tracker.children["t1"], "student")}


def test_background_writes_return_at_once_and_land_in_order(tmp_path, mlflow_uri):
    import pickle
    import threading

    uri = mlflow_uri
    tracker = Tracker(uri, "queued", artifact_root=tmp_path / "art")
    tracker.start_sweep("sweep", {}, {})
    tracker.write_in_background()
    assert pickle.loads(pickle.dumps(tracker))._writer is None  # Tune pickles its callbacks, this tracker too
    gate = threading.Event()
    tracker._writer.submit(gate.wait)  # a store that has not answered yet
    callers = {threading.get_ident()}
    real_log_batch = tracker.client.log_batch

    def log_batch(*args, **kwargs):
        callers.add(threading.get_ident())
        return real_log_batch(*args, **kwargs)

    tracker.client.log_batch = log_batch
    try:
        tracker.start_trial("t1", {"lr": 0.1}, {})
        for epoch in (1, 2, 3):
            tracker.log_metrics("t1", {"val/acc": 0.1 * epoch}, step=epoch)
        tracker.end_trial("t1")
        assert "t1" not in tracker.children  # nothing has been written: the calls only queued their writes
    finally:
        gate.set()  # the writer thread must never stay blocked, whatever failed above
    tracker.wait()
    run = MlflowClient(uri).get_run(tracker.children["t1"])
    assert run.info.status == "FINISHED" and run.data.params == {"lr": "0.1"}
    history = MlflowClient(uri).get_metric_history(run.info.run_id, "val/acc")
    assert [(m.step, round(m.value, 6)) for m in history] == [(1, 0.1), (2, 0.2), (3, 0.3)]
    assert len(callers) == 2  # the writes ran on the writer thread, not the caller's

    tracker.end_sweep()
    tracker.flush()
    assert tracker.failures == [] and tracker._writer is None
    assert MlflowClient(uri).get_run(tracker.parent_id).info.status == "FINISHED"


def test_a_failing_background_write_is_reported_after_flush(tmp_path, mlflow_uri):
    tracker = Tracker(mlflow_uri, "broken-queued", artifact_root=tmp_path / "art")
    tracker.start_sweep("sweep", {}, {})
    tracker.start_trial("t1", {}, {})
    tracker.write_in_background()

    class Down:
        def __getattr__(self, name):
            raise ConnectionError("store unreachable")

    tracker.client = Down()
    tracker.log_metrics("t1", {"val/acc": 0.9})  # does not raise in the caller
    tracker.end_trial("t1")
    tracker.flush()
    assert len(tracker.failures) == 2 and all("store unreachable" in f for f in tracker.failures)


def test_a_new_sqlite_store_gets_its_schema_on_the_writer_and_every_write_lands(tmp_path, monkeypatch):
    import threading

    uri = f"sqlite:///{tmp_path / 'sub' / 'mlflow.db'}"
    gate = threading.Event()
    real_open = Tracker._open

    def slow_open(self):
        gate.wait(10)  # MLflow's migrations, still running when the constructor returns
        real_open(self)

    monkeypatch.setattr(Tracker, "_open", slow_open)
    tracker = Tracker(uri, "deferred", artifact_root=tmp_path / "art", defer_schema=True)
    assert (tmp_path / "sub" / "mlflow.db").exists() and not hasattr(tracker, "client")
    tracker.start_sweep("sweep", {"a": 1}, {"study": "deferred"})
    tracker.start_trial("t1", {"x": 2}, {})
    tracker.log_metrics("t1", {"val/acc": 0.75}, step=3)
    gate.set()
    tracker.end_trial("t1")
    tracker.end_sweep()
    tracker.flush()
    assert tracker.failures == []
    client = MlflowClient(uri)
    run = client.get_run(tracker.children["t1"])
    assert run.data.metrics == {"val/acc": 0.75} and run.data.params == {"x": "2"}
    assert run.data.tags["mlflow.parentRunId"] == tracker.parent_id
    assert client.get_run(tracker.parent_id).info.status == "FINISHED"


def test_an_existing_store_is_opened_at_once_even_when_the_schema_may_be_deferred(tmp_path, mlflow_uri):
    uri = mlflow_uri
    Tracker(uri, "first", artifact_root=tmp_path / "art")
    tracker = Tracker(uri, "second", artifact_root=tmp_path / "art", defer_schema=True)
    assert tracker._writer is None and tracker.client.get_experiment(tracker.experiment_id).name == "second"


def test_a_store_that_cannot_be_written_fails_at_once_even_with_a_deferred_schema(tmp_path):
    import pytest

    from kdtune.errors import KdtuneError

    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the store's directory should be")
    with pytest.raises(KdtuneError, match="cannot open the MLflow store") as info:
        Tracker(f"sqlite:///{blocker / 'mlflow.db'}", "x", artifact_root=tmp_path / "art", defer_schema=True)
    assert "\n" not in str(info.value) and "tracking.uri" in str(info.value)


def test_a_deferred_schema_that_fails_is_reported_after_flush_not_raised(tmp_path, monkeypatch):
    import kdtune.tracking

    def broken_schema(uri):
        raise RuntimeError("migration 0042 failed")

    monkeypatch.setattr(kdtune.tracking._tracker, "build_schema_aside", broken_schema)
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "x", artifact_root=tmp_path / "art", defer_schema=True)
    tracker.start_sweep("sweep", {}, {})
    tracker.start_trial("t1", {}, {})
    tracker.flush()
    assert tracker.failures[0].startswith("connect: KdtuneError: cannot open the MLflow store")
    assert "migration 0042 failed" in tracker.failures[0] and len(tracker.failures) == 3


@pytest.mark.slow  # a fresh interpreter: seconds of imports
def test_a_driver_killed_while_building_a_new_stores_schema_leaves_it_empty_not_half_built(tmp_path, monkeypatch):
    import signal
    import subprocess
    import sys
    import time

    store = tmp_path / "mlflow.db"
    # A driver killed with -9 in the middle of MLflow's migrations (they run on the background writer).
    code = f"""
import mlflow.store.db.utils as utils
from pathlib import Path
from kdtune.tracking import Tracker
real = utils._upgrade_db
def upgrade_then_hang(engine):
    real(engine)
    Path({str(tmp_path / "migrated")!r}).touch()
    import time; time.sleep(60)
utils._upgrade_db = upgrade_then_hang
Tracker({f"sqlite:///{store}"!r}, "x", artifact_root=Path({str(tmp_path / "art")!r}), defer_schema=True)
import time; time.sleep(60)
"""
    driver = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 60
    while not (tmp_path / "migrated").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    assert (tmp_path / "migrated").exists() and store.stat().st_size == 0  # the store itself was never touched
    tracker = Tracker(f"sqlite:///{store}", "again", artifact_root=tmp_path / "art", defer_schema=True)
    tracker.start_sweep("sweep-001", {}, {})
    tracker.end_sweep()
    tracker.flush()
    assert tracker.failures == []
    assert MlflowClient(f"sqlite:///{store}").get_experiment_by_name("again") is not None
    assert sorted(p.name for p in tmp_path.iterdir() if "schema" in p.name) == [f".mlflow.db.{driver.pid}.schema"]


@pytest.mark.slow  # a fresh interpreter: seconds of imports
def test_after_preload_logging_a_model_imports_nothing_new():
    """The first torch.export of a process (under log_model) loads its tracer: seconds, which preload
    (run while the sweep trains) takes off the path after the sweep."""
    from tests.fresh_python import fresh_python

    lines = fresh_python("""
        import sys, tempfile
        from pathlib import Path
        import numpy as np
        from kdtune.data import MNIST_INFO
        from kdtune.models import build_model
        from kdtune.tracking import Tracker
        d = Path(tempfile.mkdtemp())
        tracker = Tracker(f"sqlite:///{d / 'mlflow.db'}", "warm", artifact_root=d / "art")
        tracker.start_sweep("sweep", {}, {})
        tracker.start_trial("t1", {}, {})
        Tracker.preload()
        before = set(sys.modules)
        model = build_model("mlp", {"hidden": [4]}, MNIST_INFO).eval()
        tracker.log_model("t1", model, np.zeros((2, 1, 28, 28), np.float32))
        print(tracker.failures)
        print(sorted(set(sys.modules) - before))
    """, timeout_s=300)
    assert lines == ["[]", "[]"]


def test_a_preload_that_fails_is_only_a_missed_warm_up(monkeypatch):
    import kdtune.tracking

    def broken(*args, **kwargs):
        raise RuntimeError("torch.export is not supported here")

    monkeypatch.setattr(kdtune.tracking._tracker, "_save_model", broken)
    Tracker.preload()  # the study goes on: log_model reports its own failures, as a guarded write


def test_an_onnx_model_is_logged_with_the_onnx_flavour_and_predicts_the_students_logits(tmp_path, mlflow_uri):
    import mlflow.onnx
    import numpy as np
    import onnxruntime as ort
    import torch

    from kdtune.data import MNIST_INFO
    from kdtune.models import build_model
    from kdtune.onnx_latency import to_onnx
    from kdtune.tracking._models import _store_uris

    tracker = Tracker(mlflow_uri, "onnx", artifact_root=tmp_path / "art")
    tracker.start_sweep("sweep", {}, {})
    tracker.start_trial("t1", {}, {})
    model = build_model("mlp", {"hidden": [4]}, MNIST_INFO).eval()
    example = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    tracker.log_onnx_model("t1", to_onnx("t1", model, (1, 28, 28)).file.data, example)
    assert tracker.failures == []
    with _store_uris(mlflow_uri):
        loaded = mlflow.onnx.load_model(f"runs:/{tracker.children['t1']}/onnx")
        flavors = mlflow.models.get_model_info(f"runs:/{tracker.children['t1']}/onnx").flavors
    assert "onnx" in flavors
    sess = ort.InferenceSession(loaded.SerializeToString(), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        np.testing.assert_allclose(sess.run(None, {"x": example})[0], model(torch.from_numpy(example)).numpy(),
                                   atol=1e-5)
