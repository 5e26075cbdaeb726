"""A trial whose Ray worker dies resumes from its last epoch's checkpoint and ends as if it had never died.

The unit tests resume ``fit`` without Ray; the sweep tests SIGKILL a real trial worker from a Tune
callback (no test hooks in kdtune) and compare the trial with an identical sweep that was left alone.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
import yaml
from ray import tune

import kdtune.sweep
import kdtune.sweep._tuner
from kdtune.sweep import SweepJob
from kdtune import store
from kdtune.attacks import pgd
from kdtune.config import TrainSpec, load_study
from kdtune.data import load_dataset
from kdtune.methods import MethodContext, build_method
from kdtune.models import build_model
from kdtune.teacher import frozen, load_or_train_teacher
from kdtune.train import FitState, fit_student, fit_teacher
from kdtune.evaluate import logits_of
from kdtune.cache import save_atomic
from kdtune.sweep._trainable import STATE_FILE, STUDENT_FILE, EpochReporter, make_trainable, resume_state

# ---------------------------------------------------------------- resuming fit, without Ray


def spec(**kw):
    base = {"model": {"name": "mlp", "hidden": [16]}, "epochs": 3, "batch_size": 64, "lr": 3.0e-3}
    return TrainSpec.model_validate({**base, **kw})


@pytest.fixture(scope="module")
def data():
    return load_dataset("mnist_5k", {"n_train": 300, "n_val": 100, "n_test": 100})


@pytest.fixture(scope="module")
def teacher(data):
    torch.manual_seed(0)
    model = build_model("mlp", {"hidden": [32]}, data.info)
    fit_teacher(model, data, spec(model={"name": "mlp", "hidden": [32]}, epochs=1), seed=0)
    return frozen(model, "cpu")


class Crash(Exception):
    """Stands in for a dead worker: raised from the state callback once the state is on disk."""


def fresh(data, teacher, tmp_path):
    """Student + FitNets distiller (its regressor is trained too) built as a trial builds them."""
    torch.manual_seed(0)
    ctx = MethodContext(data, teacher, logits_of(teacher, data.train.x), spec(), 0, tmp_path)
    return build_model("mlp", {"hidden": [16]}, data.info), build_method("fitnets", {}, ctx)


def train(data, teacher, tmp_path, train_spec, **kw):
    student, distiller = fresh(data, teacher, tmp_path)
    # PGD's random start draws from torch's global RNG: a resume must restore that too.
    adversary = functools.partial(pgd, eps=0.1, steps=2)
    history = fit_student(student, data, train_spec, distiller=distiller, adversary=adversary, seed=0, **kw)
    return student, distiller, history


def deterministic(history):
    return [{k: v for k, v in h.items() if not k.startswith("time/")} for h in history]


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_resumed_fit_ends_with_the_weights_of_an_uninterrupted_one(data, teacher, tmp_path, optimizer):
    full_student, full_distiller, full_history = train(data, teacher, tmp_path, spec(optimizer=optimizer))

    saved = tmp_path / STATE_FILE

    def crash_after_first_epoch(state: FitState) -> None:
        state.save(saved)
        raise Crash

    with pytest.raises(Crash):
        train(data, teacher, tmp_path, spec(optimizer=optimizer), on_state=crash_after_first_epoch)
    state = FitState.load(saved)  # weights_only=True, on the CPU
    assert state.epoch == 1 and set(state.extra) == {"regressor.weight", "regressor.bias"}

    epochs = []
    student, distiller, history = train(
        data, teacher, tmp_path, spec(optimizer=optimizer), resume=state, on_epoch=lambda e, _: epochs.append(e)
    )
    assert epochs == [2, 3]
    for resumed, uninterrupted in ((student, full_student), (distiller, full_distiller)):
        for (name, p), q in zip(resumed.state_dict().items(), uninterrupted.state_dict().values(), strict=True):
            torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)
    assert deterministic(history) == deterministic(full_history)


def test_resuming_after_the_last_epoch_trains_no_more(data, teacher, tmp_path):
    states = []
    student, _, history = train(data, teacher, tmp_path, spec(epochs=1), on_state=states.append)
    before = [p.clone() for p in student.parameters()]
    again, _, resumed = train(data, teacher, tmp_path, spec(epochs=1), resume=states[-1])
    assert deterministic(resumed) == deterministic(history)
    for p, q in zip(again.parameters(), before, strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_a_state_is_a_snapshot_not_a_view_of_the_live_training(data, teacher, tmp_path):
    states = []
    student, _, _ = train(data, teacher, tmp_path, spec(epochs=2), on_state=states.append)
    assert [s.epoch for s in states] == [1, 2]
    first, last = states[0].model, states[1].model
    assert any(not torch.equal(first[k], last[k]) for k in first)  # epoch 1's state kept epoch 1's weights
    for name, value in student.state_dict().items():
        torch.testing.assert_close(states[1].model[name], value, rtol=0, atol=0)


def test_the_trainables_epoch_checkpoint_loads_with_weights_only(data, teacher, tmp_path, monkeypatch):
    reported = []

    def fake_report(metrics, *, checkpoint=None):  # keep what Tune would persist (the temp dir goes away)
        kept = tmp_path / f"checkpoint_{len(reported)}"
        shutil.copytree(checkpoint.path, kept)
        reported.append((metrics, kept))

    monkeypatch.setattr(tune, "report", fake_report)
    train(data, teacher, tmp_path, spec(epochs=2), on_state=EpochReporter(0.0))  # every epoch

    assert [m["epoch"] for m, _ in reported] == [1, 2]
    assert {"train/loss", "train/task", "val/acc"} <= set(reported[0][0])
    metrics, kept = reported[-1]
    raw = torch.load(kept / STATE_FILE, weights_only=True)  # tensors and plain Python only
    assert set(raw) == {"epoch", "model", "extra", "optimizer", "generator", "rng", "cuda_rng", "history",
                        "scheduler", "best"}
    assert raw["epoch"] == 2 and raw["history"][-1]["val/acc"] == metrics["val/acc"]
    state = resume_state(tune.Checkpoint.from_directory(kept))
    assert isinstance(state, FitState) and state.epoch == 2


def test_a_checkpoint_without_a_training_state_starts_afresh(tmp_path):
    torch.save({}, tmp_path / STUDENT_FILE)  # the final checkpoint: a finished student, no FitState
    assert resume_state(tune.Checkpoint.from_directory(tmp_path)) is None
    assert resume_state(None) is None


def test_student_weights_are_replaced_atomically(tmp_path):
    path = tmp_path / "students" / "abc.pt"
    save_atomic(path, {"w": torch.zeros(2)}, what="weights", checksum=False)
    save_atomic(path, {"w": torch.ones(2)}, what="weights", checksum=False)  # a retried trial writes it again
    torch.testing.assert_close(torch.load(path, weights_only=True)["w"], torch.ones(2))
    assert [p.name for p in path.parent.iterdir()] == ["abc.pt"]


# ---------------------------------------------------------------- a real worker killed mid-sweep

EPOCHS = 4
STUDY = {
    "name": "retry",
    "seed": 0,
    "dataset": {"name": "mnist_5k", "n_train": 400, "n_val": 100, "n_test": 100},
    "teacher": {"model": {"name": "mlp", "hidden": [32]}, "epochs": 1},
    "student": {"model": {"name": "mlp", "hidden": [16]}, "epochs": EPOCHS, "lr": 5.0e-3},
    "method": {"name": "hinton", "temperature": 4.0, "alpha": 0.5},
    "penalties": {"jacobian": {"weight": 1.0e-3}},
    # PGD's random start uses torch's global RNG inside the trial: the resume must restore it too.
    "adversary": {"enabled": True, "attack": {"name": "pgd", "eps": 0.1, "steps": 2}},
    "evaluation": {
        "eps": [0.1], "pgd_steps": 2, "fgsm": False, "n_jacobian": 16,
        "latency": {"batch_sizes": [1], "warmup": 2, "repeats": 2, "n_calls": 2},
    },
    "search": {  # one trial with a known configuration, so the two sweeps run the same one
        "space": {"method.temperature": {"type": "categorical", "choices": [4.0]}},
        "objectives": [{"metric": "val/acc", "mode": "max"}, {"metric": "latency/ms_b1", "mode": "min"}],
        "sampler": {"name": "grid"},
        "max_concurrent": 1,
    },
    "resources": {"cpu": 1, "max_failures": 2, "checkpoint_every_s": 0},  # a checkpoint every epoch
}


@pytest.fixture(scope="module")
def ray_session():
    import ray

    from kdtune.sweep import init_ray

    init_ray(None)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("retry")
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(STUDY))
    cfg = load_study(path)
    data = load_dataset(cfg.dataset.name, cfg.dataset.params)
    teacher = load_or_train_teacher(cfg.teacher, data, seed=cfg.seed, root=root / "cache").model
    return cfg, data, teacher, logits_of(teacher, data.train.x)


class KillWorker(tune.Callback):
    """Records (epoch, pid) of every result; SIGKILLs the trial's worker once, after ``epoch``.

    ``at="result"`` kills on the result itself; ``at="save"`` once Tune has registered that result's
    checkpoint (Tune saves a result's checkpoint only after the result callbacks ran).
    """

    def __init__(self, *, epoch: int | None, at: str = "result") -> None:
        self.epoch, self.at = epoch, at
        self.seen: list[tuple[int, int]] = []
        self.killed: int | None = None
        self.final: dict | None = None
        self.checkpoint: str | None = None

    def _kill(self, result: dict, where: str) -> None:
        due = self.epoch is not None and self.at == where and result.get("epoch") == self.epoch
        if due and self.killed is None:
            self.killed = result["pid"]
            os.kill(self.killed, signal.SIGKILL)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        # ``result``, not ``trial.last_result``: Tune updates the latter only after the callbacks ran.
        if "epoch" in result:
            self.seen.append((int(result["epoch"]), int(result["pid"])))
        self._kill(result, "result")

    def on_trial_save(self, iteration, trials, trial, **info):
        self._kill(trial.last_result or {}, "save")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.final = dict(trial.last_result)
        self.checkpoint = trial.checkpoint.path if trial.checkpoint else None


def sweep(study, tmp_path, name, callback, monkeypatch):
    """One single-trial sweep; returns the trial's stored record and where its students are written."""
    cfg, data, teacher, logits = study
    students = {}

    def trainable(job):  # whatever directory the driver picks, remember it
        students["dir"] = job.students_dir
        return make_trainable(job)

    monkeypatch.setattr(kdtune.sweep._tuner, "make_trainable", trainable)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna_study = store.open_study(url, cfg.name, [o.mode + "imize" for o in cfg.search.objectives])
    job = SweepJob(cfg=cfg, data=data, teacher=teacher, teacher_logits=logits, storage=tmp_path / "ray",
                   run_name=name, n_trials=1, optuna_storage=url, students_dir=tmp_path / "students")
    errors = kdtune.sweep.run_sweep(job, [callback])
    assert errors == {}
    (record,) = store.read_records(optuna_study, students["dir"])
    return record, students["dir"]


def final_metrics(result: dict) -> dict:
    """What a resumed trial must reproduce exactly: everything but timings (wall clock, latency)."""
    return {k: v for k, v in result.items() if "/" in k and not k.startswith(("time/", "latency/"))}


@pytest.fixture(scope="module")
def uninterrupted(study, ray_session, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("uninterrupted")
    with pytest.MonkeyPatch.context() as monkeypatch:
        callback = KillWorker(epoch=None)
        record, _ = sweep(study, tmp_path, "uninterrupted", callback, monkeypatch)
    assert record.status == "COMPLETE"
    assert len({pid for _, pid in callback.seen}) == 1
    return callback


@pytest.mark.slow
@pytest.mark.parametrize(
    ("at", "resumes_at"),
    [
        # Killed on epoch 2's result: Tune had not yet saved that result's checkpoint (it saves after the
        # result callbacks), so the retry resumes from epoch 1's and trains epoch 2 again.
        ("result", 2),
        # Killed once epoch 2's checkpoint is registered: the retry resumes after epoch 2.
        ("save", 3),
    ],
)
def test_a_killed_worker_resumes_from_its_checkpoint_to_the_uninterrupted_result(
    study, ray_session, uninterrupted, tmp_path, monkeypatch, at, resumes_at
):
    callback = KillWorker(epoch=2, at=at)
    record, students_dir = sweep(study, tmp_path, f"killed_at_{at}", callback, monkeypatch)

    assert record.status == "COMPLETE" and record.error is None
    first_pid = callback.seen[0][1]
    assert callback.killed == first_pid
    before = [e for e, pid in callback.seen if pid == first_pid]
    after = [e for e, pid in callback.seen if pid != first_pid]
    assert before == [1, 2]
    assert len({pid for e, pid in callback.seen if pid != first_pid}) == 1  # one retry, in one new worker
    assert after == [*range(resumes_at, EPOCHS + 1), EPOCHS]  # per-epoch results, then the final report

    # the same final metrics as the sweep nobody killed, to the last bit
    assert final_metrics(callback.final) == final_metrics(uninterrupted.final)
    assert record.metrics["val/acc"] == uninterrupted.final["val/acc"]

    # the student is written where the study keeps it, and it is the checkpoint's final student
    weights = torch.load(students_dir / f"{record.trial_id}.pt", weights_only=True)
    final = torch.load(Path(callback.checkpoint) / STUDENT_FILE, weights_only=True)
    for name, value in final.items():
        torch.testing.assert_close(weights[name], value, rtol=0, atol=0)
    assert not list(students_dir.glob("*.tmp"))  # the atomic write left nothing behind


def test_an_unreadable_checkpoint_restarts_the_trial_instead_of_failing_it(tmp_path):
    from ray import tune

    from kdtune.sweep._trainable import STATE_FILE, resume_state

    (tmp_path / STATE_FILE).write_bytes(b"cut short by kill -9")
    assert resume_state(tune.Checkpoint.from_directory(str(tmp_path))) is None


def test_epochs_between_reports_ride_along_with_the_next_one(monkeypatch, tmp_path):
    """With an interval, only epochs reached after it are reported (with a checkpoint); the others
    travel in the next report, so every epoch still arrives, in order."""
    from kdtune.sweep._trainable import EPOCHS_KEY, carried_epochs

    now = [0.0]
    reported = []
    monkeypatch.setattr(tune, "report", lambda metrics, *, checkpoint=None: reported.append((metrics, checkpoint)))
    reporter = EpochReporter(10.0, clock=lambda: now[0])

    class State:  # what EpochReporter reads of a FitState
        def __init__(self, epoch):
            self.epoch, self.history = epoch, [{"train/loss": 1.0 / epoch, "val/acc": epoch / 10}]

        def save(self, path):
            path.write_text(str(self.epoch))

    for epoch, t in [(1, 3.0), (2, 6.0), (3, 11.0), (4, 14.0), (5, 18.0)]:
        now[0] = t
        reporter(State(epoch))
    assert [m["epoch"] for m, _ in reported] == [3]  # the first epoch 10 s after the start
    metrics, checkpoint = reported[0]
    assert checkpoint is not None
    assert [e["epoch"] for e in carried_epochs(metrics)] == [1, 2]
    assert metrics["val/acc"] == 0.3
    final = reporter.unreported()  # the final report carries what is left: epochs 4 and 5
    assert [e["epoch"] for e in carried_epochs(final)] == [4, 5]
    assert reporter.unreported() == {}
    assert EPOCHS_KEY not in metrics or metrics[EPOCHS_KEY].startswith("[")


def test_no_interval_reports_every_epoch(monkeypatch):
    from kdtune.sweep._trainable import carried_epochs

    reported = []
    monkeypatch.setattr(tune, "report", lambda metrics, *, checkpoint=None: reported.append(metrics))
    reporter = EpochReporter(0.0, clock=lambda: 0.0)

    class State:
        def __init__(self, epoch):
            self.epoch, self.history = epoch, [{"val/acc": 0.5}]

        def save(self, path):
            path.write_text("")

    for epoch in (1, 2, 3):
        reporter(State(epoch))
    assert [m["epoch"] for m in reported] == [1, 2, 3]
    assert all(carried_epochs(m) == [] for m in reported)
