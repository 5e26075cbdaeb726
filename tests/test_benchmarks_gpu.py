"""The GPU packing benchmark (``benchmarks/gpu.py``, ``gpu.sh``): its trial accounting, synthetic data and wheel
picking, and a tiny CPU run end to end with Ray, Optuna, MLflow, scikit-learn, torchvision (every dependency the
GPU machine lacks) unimportable in every process.
No timed assertions: the figures of a CPU run mean nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.fresh_python import fresh_python

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # benchmarks/ is a top-level folder of the repository, not an installed package
    sys.path.insert(0, str(REPO))

from benchmarks._gpu_report import add_speedups, cell_figures, table, trial_credit
from benchmarks._gpu_study import N_CLASSES, Sizes, synthetic_images
from benchmarks._wheels import fits

# kdtune's dependencies that the GPU machine lacks (it has torch, NumPy, pandas, onnxruntime; pydantic, PyYAML
# and packaging are carried): the benchmark must run with every one of them unimportable
DEVICE_LACKS = ("ray", "optuna", "mlflow", "sklearn", "scipy", "mlxtend", "torchvision", "PIL", "onnx", "onnxscript",
                "matplotlib", "plotly", "art", "multiprocess", "greenlet")


CP = f"cp{sys.version_info[0]}{sys.version_info[1]}"  # this interpreter's wheel tag


def _trial(start: float, end: float, finished: bool, epochs: tuple[float, ...] = ()) -> dict:
    return {"start": start, "end": end, "finished": finished, "epochs": list(epochs), "val/acc": 0.5}


def test_trial_credit_counts_the_share_inside_the_window():
    window = {"t0": 0.0, "deadline": 10.0, "epochs": 4}
    assert trial_credit(_trial(0, 4, True), typical_s=None, **window) == (1.0, False)
    assert trial_credit(_trial(8, 12, True), typical_s=None, **window) == (0.5, False)  # its own duration
    assert trial_credit(_trial(8, 10.5, False), typical_s=4.0, **window) == (0.5, False)  # the cell's mean
    # no finished trial in the cell: epochs done by the deadline over the trial's epochs, flagged
    assert trial_credit(_trial(0, 11, False, (4, 8, 11)), typical_s=None, **window) == (0.5, True)


def test_cell_figures_and_table():
    records = [{"trials": [_trial(0, 4, True), _trial(4, 8, True), _trial(8, 10.2, False)],
                "peak_reserved_mib": 100.0, "forbidden": []},
               {"trials": [_trial(0, 5, True), _trial(5, 11, True)], "peak_reserved_mib": 50.0, "forbidden": []}]
    fig = cell_figures(records, t0=0.0, deadline=10.0, epochs=4)
    # 3 inside; 2/4.75 of the aborted one (mean finished duration 4.75 s); 5/6 of the one that ended at 11 s
    assert fig["trials_completed"] == 3 and fig["trials_started"] == 5
    assert fig["trial_equivalents"] == pytest.approx(3 + 2 / 4.75 + 5 / 6, abs=1e-3)
    assert fig["trials_per_hour"] == pytest.approx(fig["trial_equivalents"] / 10 * 3600, abs=0.5)
    assert fig["torch_reserved_peak_mib"] == 150.0 and not fig["estimated"]
    cells = [{"n_workers": 1, "amp": "off", **fig}, {"n_workers": 2, "amp": "off", **fig, "trials_per_hour": 2.0}]
    cells[0]["trials_per_hour"] = 1.0
    add_speedups(cells)
    assert [c["speedup_vs_1"] for c in cells] == [1.0, 2.0]
    lines = table(cells).splitlines()
    assert lines[0].split()[:3] == ["N", "amp", "trials/h"] and len(lines) == 4


def test_synthetic_images_are_deterministic_and_shaped():
    x, y = synthetic_images(50, 16, seed=3)
    assert x.shape == (50, 3, 16, 16) and x.dtype == np.uint8 and y.dtype == np.int64
    assert 0 <= y.min() and y.max() < N_CLASSES
    x2, y2 = synthetic_images(50, 16, seed=3)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert Sizes.full().with_changes(epochs=2, n_train=None).epochs == 2


@pytest.mark.parametrize(("name", "fit"), [
    ("pydantic-2.13.4-py3-none-any.whl", 1),
    (f"pydantic_core-2.46.4-{CP}-{CP}-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
     3 if os.uname().machine == "x86_64" else 0),
    ("pydantic_core-2.46.4-cp39-cp39-manylinux_2_17_x86_64.whl", 0),
    ("pyyaml-6.0.3-cp311-cp311-win_amd64.whl", 0),
    ("not a wheel.zip", 0),
])
def test_wheel_fits_this_interpreter(name, fit):
    assert fits(name) == fit


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has an NVIDIA GPU")
def test_gpu_sh_without_a_gpu_says_so():
    out = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu.sh")], capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 2 and "needs a machine with an NVIDIA GPU" in out.stderr


@pytest.mark.slow
def test_driver_and_trial_code_import_nothing_the_gpu_machine_lacks():
    fresh_python(f"""
        import sys
        sys.modules.update({{m: None for m in {DEVICE_LACKS!r}}})  # importing any of them now raises
        import benchmarks.gpu
        import benchmarks._gpu_worker as worker
        # what a worker imports lazily: the trial's whole code path
        import kdtune.cache, kdtune.compat.optim, kdtune.config, kdtune.data, kdtune.evaluate, kdtune.latency
        import kdtune.methods, kdtune.student, kdtune.teacher
        assert worker.forbidden_modules() == []
    """)


def _blocker(root: Path) -> Path:
    """A folder of packages named as ``DEVICE_LACKS`` that raise ImportError: first on PYTHONPATH, it blocks
    them in the driver and in every worker it spawns."""
    for name in DEVICE_LACKS:
        (root / name).mkdir(parents=True)
        (root / name / "__init__.py").write_text(f"raise ImportError('{name} is blocked: the GPU machine has none')\n")
    return root


@pytest.mark.slow
def test_tiny_cpu_run_end_to_end_without_what_the_gpu_machine_lacks(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(_blocker(tmp_path / "blocked")), str(REPO)])}
    out_json = tmp_path / "gpu.json"
    cmd = [sys.executable, "-m", "benchmarks.gpu", "--tiny", "--device", "cpu", "--concurrency", "1,2", "--amp", "off",
           "--window-s", "3", "--root", str(tmp_path / "run"), "--out", str(out_json)]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Ray/Optuna/MLflow modules imported: none" in done.stdout
    payload = json.loads(out_json.read_text())
    meta, cells = payload["meta"], payload["cells"]
    assert meta["forbidden_in_driver"] == [] and meta["device"] == "cpu" and meta["tiny"]
    assert [w["teacher_from_cache"] for w in sorted(meta["workers"], key=lambda w: w["worker"])] == [False, True]
    assert [(c["n_workers"], c["amp"]) for c in cells] == [(1, "off"), (2, "off")]
    for cell in cells:
        assert cell["forbidden"] == []
        assert cell["trials_completed"] > 0 and cell["trial_equivalents"] >= cell["trials_completed"]
        assert cell["trial_equivalents"] <= cell["trials_started"]
        assert cell["trials_per_hour"] == pytest.approx(cell["trial_equivalents"] / cell["window_s"] * 3600, rel=1e-3)
        assert cell["window_s"] == pytest.approx(3.0, abs=0.05)
        assert cell["gpu_util_mean"] is None and 0.0 <= cell["val_acc_mean"] <= 1.0
    assert cells[0]["speedup_vs_1"] == 1.0
