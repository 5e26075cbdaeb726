"""The ``Tracker``: one experiment per study, one parent run per sweep, one child run per trial.

Every run is ended explicitly (FINISHED, FAILED or KILLED): none is left RUNNING. All writes happen in the driver
process; during a study they run in order on one background thread (``Tracker.write_in_background``), so a slow
store (a remote server, a busy SQLite file) never holds back the sweep.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from kdtune import priority
from kdtune.metrics import mlflow_key
from kdtune.tracking._store import build_schema_aside, new_sqlite_file, quiet_migrations, raise_unopenable
from kdtune.urls import sqlite_path

log = logging.getLogger(__name__)
MAX_PARAM_LEN = 6000
# MLflow's mark of an experiment's kind; no Python constant holds it. The values are the UI's ExperimentKind
# enum (mlflow/server/js/build/static/js/main.*.js: "genai_development", "custom_model_development", ...);
# mlflow/demo/generators/traces.py sets the key for its GenAI demo. MLflow 3.17's UI reads it only with its
# workflow switch off, and that switch is on: it opens an experiment on the tab of the sidebar's GenAI / Model
# training choice (tests/test_mlflow_ui.py).
EXPERIMENT_KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"


def default_uri(configured: str | None, workdir: Path) -> str:
    """The YAML's URI, else $MLFLOW_TRACKING_URI, else ``sqlite:///<workdir>/mlflow.db`` (absolute)."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(workdir / 'mlflow.db').resolve()}"


def artifact_root(uri: str, configured: str | None, workdir: Path) -> Path | None:
    """Where a new experiment of the store at ``uri`` keeps its artifacts: ``tracking.artifacts`` (relative
    to ``workdir``), else beside a SQLite store, else None for an MLflow server (it decides), else
    ``<workdir>/mlartifacts``."""
    if configured:
        return (workdir / Path(configured).expanduser()).resolve()
    if uri.startswith(("http://", "https://", "databricks")):
        return None
    path = sqlite_path(uri)
    if path is not None:
        return path.resolve().parent / "mlartifacts"
    return (workdir / "mlartifacts").resolve()


def guarded(method: Callable[..., None]) -> Callable[..., None]:
    """A write that must not stop the sweep: on failure, warn once and remember it. With a background
    writer, the write is queued behind the earlier ones and the call returns at once.

    Training results are kept by Ray and the report whatever happens to the MLflow store.
    """

    @functools.wraps(method)
    def wrapper(self: Tracker, *args: Any, **kwargs: Any) -> None:
        def write() -> None:
            try:
                method(self, *args, **kwargs)
            except Exception as err:  # noqa: BLE001 - the store's errors are many and none may stop training
                reason = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
                if not self.failures:
                    log.warning("MLflow %s failed (%s); the sweep goes on, the report is unaffected",
                                method.__name__, reason)
                self.failures.append(f"{method.__name__}: {reason}")

        if self._writer is None:
            write()
        else:
            self._writer.submit(write)

    return wrapper


class Outcome(NamedTuple):
    """A finished trial as the study's storage holds it (``Tracker.settle_trials``)."""

    metrics: Mapping[str, float]
    error: str | None = None  # None: complete
    weights: Path | None = None  # its stored weights, if any
    params: Mapping[str, Any] | None = None  # its run's params and tags, for a run the killed driver never made
    tags: Mapping[str, str] | None = None
    pruned_at_epoch: int | None = None  # stopped early at this rung: the run ends KILLED


PRUNED_TAG = "kdtune.pruned_at_epoch"  # a trial stopped early at a rung (search.scheduler: moasha)


class Tracker:
    """A sweep's MLflow runs: the parent, and a child per trial id."""

    def __init__(self, uri: str, experiment: str, *, artifact_root: Path | None, defer_schema: bool = False) -> None:
        """Open the store at ``uri`` and its experiment (created if missing, marked as a model-training
        experiment: ``EXPERIMENT_KIND_TAG``); a store that cannot be opened raises ``KdtuneError``.

        With ``defer_schema``, a SQLite store that does not exist yet is only created and checked for
        writing here; MLflow's schema (about a second of migrations) is built on the background writer
        (``write_in_background``), ahead of every write, so the sweep does not wait for it.
        """
        self.uri, self._experiment, self._artifact_root = uri, experiment, artifact_root
        self.parent_id: str | None = None
        self.children: dict[str, str] = {}
        self.failures: list[str] = []  # writes that failed (see ``guarded``); complete after ``flush``
        self._writer: concurrent.futures.ThreadPoolExecutor | None = None
        self._ended: set[str] = set()  # runs this tracker ended: ``end_sweep`` need not ask the store about them
        if defer_schema and new_sqlite_file(uri):
            self.write_in_background()
            self.connect()  # queued: the first write
        else:
            raise_unopenable(uri, self._open)

    @guarded
    def connect(self) -> None:
        """Open the store (``defer_schema``): on the background writer, ahead of every other write."""
        raise_unopenable(self.uri, lambda: (build_schema_aside(self.uri), self._open()))

    def _open(self) -> None:
        from mlflow.tracking import MlflowClient

        quiet_migrations()
        self.client = MlflowClient(tracking_uri=self.uri)
        found = self.client.get_experiment_by_name(self._experiment)
        if found is None:
            self.experiment_id = self.client.create_experiment(
                self._experiment, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING},
                artifact_location=self._artifact_root.resolve().as_uri() if self._artifact_root is not None else None,
            )
            return
        self.experiment_id = found.experiment_id
        if EXPERIMENT_KIND_TAG not in found.tags:  # made by an older kdtune or by hand; a user's own kind stays
            self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)

    def runs_link(self) -> str | None:
        """The page of MLflow's UI with this experiment's runs table: on the server, or (with the command that
        starts it) on ``mlflow ui``'s default address for a local store. ``?workflowType=machine_learning`` because MLflow 3.17's UI otherwise opens
        on its GenAI overview whatever the experiment's kind tag says. None if the store never opened."""
        experiment_id = getattr(self, "experiment_id", None)
        if experiment_id is None:
            return None
        page = f"#/experiments/{experiment_id}?workflowType=machine_learning"
        if self.uri.startswith(("http://", "https://")):
            return f"{self.uri.rstrip('/')}/{page}"
        return f"http://127.0.0.1:5000/{page} (after: mlflow ui --backend-store-uri {self.uri} --host 127.0.0.1)"

    def write_in_background(self) -> None:
        """From now on every write (the ``guarded`` methods) is queued, in call order, on one thread of
        its own: a Tune callback returns at once instead of holding the next trial until the store has
        answered. Values passed to a write must not change afterwards. ``flush`` waits for the queue."""
        if self._writer is None:
            # Nothing waits for the writes until the study ends: the thread yields the CPU to the trials.
            self._writer = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="kdtune-mlflow-writer", initializer=priority.background_thread
            )

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles its callbacks, this tracker among them, into the experiment's state: the copy
        has no writer thread (it writes in the caller's thread)."""
        return {**self.__dict__, "_writer": None}

    def wait(self) -> None:
        """Block until every write queued so far is done; later writes still go to the background."""
        if self._writer is not None:
            self._writer.submit(lambda: None).result()

    def flush(self) -> None:
        """Wait for every queued write, then write in the caller's thread again."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.shutdown(wait=True)

    @staticmethod
    def preload() -> None:
        """Do once what ``log_model`` does the first time in a process: import mlflow.pytorch and export a
        (throwaway, tiny) model, whose first ``torch.export`` loads and sets up its tracer (about 3 s; a
        student afterwards takes about 0.1 s)."""
        import numpy as np
        import torch

        # A student's kind of ops, and a batch of two as the studies log (its first dimension is exported as
        # dynamic, which takes tracer code of its own).
        tiny = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2), torch.nn.ReLU()).eval()
        try:
            with tempfile.TemporaryDirectory() as tmp:
                _save_model(tiny, np.zeros((2, 1, 2, 2), np.float32), Path(tmp) / "model")
        except Exception as err:  # noqa: BLE001 - only a warm-up: log_model reports its own failures
            log.debug("warming up MLflow's model export failed: %s", err)

    @guarded
    def start_sweep(self, name: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        """The parent run of sweep ``name``: a new one, or, when the sweep is resumed, its existing run
        (and its children), so every trial keeps exactly one run."""
        found = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`kdtune.sweep` = '{name}'", max_results=1
        )
        if found:
            self.parent_id = found[0].info.run_id
            self.client.update_run(self.parent_id, status="RUNNING")
            children = self.client.search_runs(
                [self.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{self.parent_id}'", max_results=10000
            )
            self.children = {r.data.tags["trial_id"]: r.info.run_id for r in children if "trial_id" in r.data.tags}
            return
        run = self.client.create_run(self.experiment_id, run_name=name, tags={**tags, "kdtune.sweep": name})
        self.parent_id = run.info.run_id
        self._log_params(self.parent_id, params)

    @guarded
    def start_trial(self, trial_id: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        if trial_id in self.children:  # a resumed or retried trial keeps its run
            self.client.update_run(self.children[trial_id], status="RUNNING")
            self._ended.discard(self.children[trial_id])
            return
        self._start_run(trial_id, params, tags)

    def _start_run(self, trial_id: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        own = {mlflow_key(k): v for k, v in tags.items()}
        tags = {"mlflow.parentRunId": self.parent_id or "", "trial_id": trial_id, **own}
        run = self.client.create_run(self.experiment_id, run_name=f"trial {trial_id}", tags=tags)
        self.children[trial_id] = run.info.run_id
        self._log_params(run.info.run_id, params)

    def log_metrics(self, trial_id: str | None, metrics: Mapping[str, float], *, step: int = 0) -> None:
        self.log_steps(trial_id, [(step, metrics)])

    @guarded
    def log_steps(self, trial_id: str | None, steps: Iterable[tuple[int, Mapping[str, Any]]]) -> None:
        """Metrics of several steps (e.g. epochs) in one write; values that are not numbers are skipped."""
        self._log_steps(self._run_id(trial_id), steps)

    def _log_steps(self, run_id: str | None, steps: Iterable[tuple[int, Mapping[str, Any]]]) -> None:
        from mlflow.entities import Metric

        if run_id is None:
            return
        now = int(time.time() * 1000)
        batch = [Metric(mlflow_key(k), float(v), now, step) for step, metrics in steps
                 for k, v in metrics.items() if _is_number(v)]
        for i in range(0, len(batch), 1000):
            self.client.log_batch(run_id, metrics=batch[i : i + 1000])

    @guarded
    def end_trial(self, trial_id: str, *, error: str | None = None, pruned_at_epoch: int | None = None) -> None:
        """End a trial's run: FINISHED, FAILED with its ``error`` tag, or KILLED with the tag
        ``kdtune.pruned_at_epoch`` when the scheduler stopped it early at that rung."""
        self._end_trial(self.children.get(trial_id), error, pruned_at_epoch)

    def _end_trial(self, run_id: str | None, error: str | None, pruned_at_epoch: int | None = None) -> None:
        if run_id is None:
            return
        if error:
            self.client.set_tag(run_id, "error", error[:5000])
        if pruned_at_epoch is not None:
            self.client.set_tag(run_id, PRUNED_TAG, str(pruned_at_epoch))
        status = "FAILED" if error else "KILLED" if pruned_at_epoch is not None else "FINISHED"
        self.client.set_terminated(run_id, status=status)
        self._ended.add(run_id)

    @guarded
    def settle_trials(self, outcomes: Mapping[str, Outcome], *, step: int, weights_as: str) -> None:
        """End the runs of finished trials that are still RUNNING, with what the sweep would have written; a
        finished trial without a run (given its ``params``) gets one.

        ``outcomes`` are the finished trials as the study's storage holds them. A driver killed right after
        a trial finished has recorded it there but may have lost its last MLflow writes (they are queued);
        the resumed sweep does not run that trial again, so its run is settled here instead of being marked
        KILLED: the final metrics at ``step``, the weights as the artifact ``weights_as``, the end.
        """
        for trial_id, outcome in outcomes.items():
            run_id = self.children.get(trial_id)
            if run_id is None and outcome.params is not None:  # the killed driver never made its run
                self._start_run(trial_id, outcome.params, outcome.tags or {})
                run_id = self.children[trial_id]
            elif run_id is None or self.client.get_run(run_id).info.status != "RUNNING":
                continue
            if outcome.error is None and outcome.pruned_at_epoch is None:
                self._log_steps(run_id, [(step, outcome.metrics)])
            if outcome.weights is not None:
                self._log_file_as(run_id, outcome.weights, weights_as)
            self._end_trial(run_id, outcome.error, outcome.pruned_at_epoch)

    @guarded
    def log_artifacts(self, trial_id: str | None, paths: Iterable[Path], *, artifact_path: str | None = None) -> None:
        run_id = self._run_id(trial_id)
        for path in paths if run_id else ():
            if path.is_dir():
                self.client.log_artifacts(run_id, str(path), artifact_path)
            elif path.exists():
                self.client.log_artifact(run_id, str(path), artifact_path)

    @guarded
    def log_file_as(self, trial_id: str | None, path: Path, name: str) -> None:
        """Log the file ``path`` as the artifact ``name`` (e.g. a trial's weights as ``student.pt``)."""
        self._log_file_as(self._run_id(trial_id), path, name)

    def _log_file_as(self, run_id: str | None, path: Path, name: str) -> None:
        if run_id is None or not path.exists():
            return
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copyfile(path, Path(tmp) / name)
            self.client.log_artifact(run_id, str(Path(tmp) / name))

    @guarded
    def log_model(self, trial_id: str, model: Any, example: Any) -> None:
        """Log a trial's student as an MLflow PyTorch model (artifact ``student``, loadable from
        ``runs:/<run id>/student``) with the input signature of ``example`` (a float32 batch of inputs)
        and the logits it produces. Saved, then logged through the client: no global MLflow state."""
        self._log_saved(trial_id, "student", lambda path: _save_model(model, example, path))

    @guarded
    def log_onnx_model(self, trial_id: str, data: bytes, example: Any) -> None:
        """Log a trial's student as the MLflow ONNX model ``data`` (a serialized ONNX file; artifact ``onnx``,
        loadable with ``mlflow.onnx.load_model("runs:/<run id>/onnx")``) with the input signature of
        ``example`` and the logits ONNX Runtime computes for it. Saved, then logged through the client."""
        self._log_saved(trial_id, "onnx", lambda path: _save_onnx_model(data, example, path))

    def _log_saved(self, trial_id: str, artifact: str, save: Callable[[Path], None]) -> None:
        """``save`` a model into a temporary folder, then log that folder as the trial run's ``artifact``."""
        run_id = self._run_id(trial_id)
        if run_id is None:
            return
        with tempfile.TemporaryDirectory() as tmp:
            save(Path(tmp) / artifact)
            self.client.log_artifacts(run_id, str(Path(tmp) / artifact), artifact)

    @guarded
    def set_tags(self, trial_id: str | None, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        run_id = self._run_id(trial_id)
        if run_id and tags:  # one write for all of them
            self.client.log_batch(run_id, tags=[RunTag(mlflow_key(k), str(v)) for k, v in tags.items()])

    @guarded
    def end_sweep(self, status: str = "FINISHED") -> None:
        """End the parent; any child still RUNNING (e.g. after an interrupt) is marked KILLED. Only the
        children this tracker did not end itself are looked up in the store."""
        for run_id in self.children.values():
            if run_id not in self._ended and self.client.get_run(run_id).info.status == "RUNNING":
                self.client.set_terminated(run_id, status="KILLED")
        if self.parent_id is not None:
            self.client.set_terminated(self.parent_id, status=status)

    def _run_id(self, trial_id: str | None) -> str | None:
        """The run of ``trial_id``, or the sweep's parent run for None; None if there is no such run."""
        return self.parent_id if trial_id is None else self.children.get(trial_id)

    def _log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(mlflow_key(k), str(v)[:MAX_PARAM_LEN]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])


def _save_model(model: Any, example: Any, path: Path) -> None:
    """``model`` as an MLflow PyTorch model at ``path``, with the signature of ``example`` (a float32 batch
    of inputs, also kept as the input example) and the logits it produces."""
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    with torch.no_grad():
        logits = model(torch.from_numpy(example)).numpy()
    mlflow.pytorch.save_model(model, path, signature=infer_signature(example, logits), input_example=example,
                              pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])


def _save_onnx_model(data: bytes, example: Any, path: Path) -> None:
    """The ONNX model ``data`` as an MLflow ONNX model at ``path``, with the signature of ``example`` (a float32
    batch of inputs, also kept as the input example) and the logits ONNX Runtime produces for it."""
    from importlib.metadata import version

    import mlflow.onnx
    import onnx
    import onnxruntime as ort
    from mlflow.models import infer_signature

    model = onnx.load_from_string(data)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: example})[0]
    mlflow.onnx.save_model(model, path, signature=infer_signature(example, logits), input_example=example,
                           pip_requirements=[f"onnx=={version('onnx')}", f"onnxruntime=={version('onnxruntime')}"],
                           onnx_execution_providers=["CPUExecutionProvider"], save_as_external_data=False)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
