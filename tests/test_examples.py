"""The example project in examples/own_models runs as its README says, from a copy of it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "own_models"


def readme_commands() -> list[str]:
    """The commands of the README's bash block, comments dropped."""
    block = re.search(r"```bash\n(.*?)```", (EXAMPLE / "README.md").read_text(encoding="utf-8"), re.S)
    assert block is not None
    return [line.split("  #", 1)[0].strip() for line in block[1].splitlines() if line.strip()]


def test_the_readme_lists_the_three_steps():
    assert readme_commands() == ["python make_data.py", "python train_teacher.py", "python -m kdtune study.yaml"]


@pytest.mark.slow  # trains a teacher and runs a 4-trial study through Ray, Optuna and MLflow
def test_the_own_models_example_runs_its_readme_commands(tmp_path):
    project = tmp_path / "own_models"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("data", "checkpoints", "reports", ".kdtune",
                                                                    "mlflow.db", "mlartifacts", "__pycache__"))
    env = {**os.environ, "KDTUNE_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("MLFLOW_TRACKING_URI", None)
    outputs = []
    for command in readme_commands():
        argv = command.split()
        argv[0] = sys.executable  # "python", as this test's interpreter
        done = subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        outputs.append(done.stdout)
    assert len(list((project / "data" / "train").glob("*/*.png"))) == 1000
    assert "teacher test accuracy" in outputs[1] and (project / "checkpoints" / "teacher.pt").exists()
    study = outputs[2]
    assert "teacher loaded from" in study and "4/4 trials complete" in study
    teacher_acc = float(re.search(r"teacher test accuracy (\d\.\d+)", outputs[1])[1])
    assert teacher_acc > 0.8  # the plain-PyTorch teacher learned the digits
    line = re.search(r"teacher val/acc=(\d\.\d+) test/acc=(\d\.\d+)", study)
    assert float(line[2]) == pytest.approx(teacher_acc, abs=1e-4)  # kdtune fed it exactly as its owner did
    trials = pd.read_csv(project / "reports" / "own_models" / "trials.csv")
    assert (trials["status"] == "COMPLETE").all() and len(trials) == 4
    assert sorted(trials["student.model.width"].unique()) == [2, 4]
