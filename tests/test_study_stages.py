"""kdtune.study: a run is a list of stages over one StudyRun; each stage is a module with one public function."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from kdtune import study
from kdtune.records import TrialRecord
from kdtune.spec import StudyConfig
from kdtune.study import MEASUREMENTS, REPORT_STAGES, RUN_STAGES, StudyPaths, StudyRun, run_stages

STAGES = Path(study.__file__).parent / "stages"


def _public_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    return [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")]


@pytest.mark.parametrize("path", sorted(p for p in STAGES.glob("*.py") if p.name != "__init__.py"), ids=lambda p: p.stem)
def test_each_stage_module_has_one_public_function_taking_the_run(path):
    (name,) = _public_functions(path)
    stage = next(s for s in {*RUN_STAGES, *REPORT_STAGES} if s.__module__.endswith(f".{path.stem}"))
    assert stage.__name__ == name
    assert list(inspect.signature(stage).parameters) == ["run"]


def test_the_run_and_the_rebuilt_report_share_the_post_sweep_measurements():
    assert RUN_STAGES[2 : 2 + len(MEASUREMENTS)] == MEASUREMENTS
    assert REPORT_STAGES[1 : 1 + len(MEASUREMENTS)] == MEASUREMENTS
    assert len(set(RUN_STAGES)) == len(RUN_STAGES)


def test_stages_run_in_order_over_one_run_object(tmp_path, study_dict):
    cfg = StudyConfig.model_validate({**study_dict, "name": "s"})
    run = StudyRun(cfg, StudyPaths.of(cfg, tmp_path), echo=lambda line: None)
    seen = []

    def first(r: StudyRun) -> None:
        seen.append("first")
        r.records = [TrialRecord("t", "COMPLETE", {}, {"val/acc": 0.5})]

    def measure(r: StudyRun) -> None:  # a new post-sweep measurement
        seen.append("measure")
        r.add_metrics({"t": {"val/x": 1.0}})

    run_stages(run, [first, measure])
    assert seen == ["first", "measure"] and run.records[0].metrics == {"val/acc": 0.5, "val/x": 1.0}
    assert run.paths.students == tmp_path / ".kdtune" / "ray" / "s" / "students"
    assert run.paths.storage == f"sqlite:///{tmp_path / '.kdtune' / 'optuna.db'}"
