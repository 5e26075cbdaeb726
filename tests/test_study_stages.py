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
from tests.studies import base_study

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
    from kdtune.study.stages.sweep import sweep

    first = RUN_STAGES.index(sweep) + 1  # right after the sweep
    assert RUN_STAGES[first : first + len(MEASUREMENTS)] == MEASUREMENTS
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


# ---------------------------------------------------------------- the start stage's check of feature taps


def _tap_check(raw: dict, teacher) -> None:
    from types import SimpleNamespace

    from kdtune.config import validate_study
    from kdtune.study.stages.start import _check_teacher_taps

    _check_teacher_taps(SimpleNamespace(cfg=validate_study(raw, source="s"), teacher=SimpleNamespace(model=teacher)))


def _exported(model):
    import io

    import torch

    from kdtune.exported import ExportedNet

    buffer = io.BytesIO()
    torch.export.save(torch.export.export(model.eval(), (torch.rand(2, 1, 28, 28),)), buffer)
    return ExportedNet(buffer.getvalue())


def test_a_feature_methods_teacher_layer_is_checked_before_any_trial(small_teacher):
    from kdtune.errors import ConfigError

    raw = base_study(method={"name": "cosine", "teacher_layer": "net.9"}, search={
        "space": {"method.weight": {"type": "float", "low": 0.1, "high": 0.5}},
        "objectives": [{"metric": "val/acc", "mode": "max"}], "budget": 2})
    with pytest.raises(ConfigError, match=r"^method 'cosine': teacher_layer: unknown layer 'net.9' .*one of: normalize, net, net.0"):
        _tap_check(raw, small_teacher)
    raw["method"]["teacher_layer"] = "net.2"
    _tap_check(raw, small_teacher)  # a layer the teacher has


def test_an_exported_mlflow_teacher_refuses_feature_methods_but_not_logit_ones(small_teacher):
    from kdtune.errors import ConfigError

    exported = _exported(small_teacher)
    searched = base_study(search={"space": {"method.name": {"type": "categorical", "choices": ["hinton", "fitnets"]}},
                                  "objectives": [{"metric": "val/acc", "mode": "max"}], "budget": 2})
    with pytest.raises(ConfigError, match=r"^method 'fitnets' taps the teacher's layers, but teacher.mlflow_model is "
                                          r"an exported graph .*; use a logit method"):
        _tap_check(searched, exported)
    _tap_check(base_study(), exported)  # hinton reads logits only


# ---------------------------------------------------------------- the front's ONNX files


def test_the_front_and_the_teacher_get_their_onnx_files_and_stale_ones_go(tmp_path, study_dict):
    from kdtune.compat.onnx import OnnxFile
    from kdtune.onnx_latency import OnnxModel
    from kdtune.study.stages import onnx_files
    from kdtune.study.stages.serial_latency import TEACHER

    cfg = StudyConfig.model_validate({**study_dict, "name": "s"})  # one objective: val/acc (max)
    run = StudyRun(cfg, StudyPaths.of(cfg, tmp_path), echo=lambda line: None)
    run.records = [TrialRecord("best", "COMPLETE", {}, {"val/acc": 0.9}),
                   TrialRecord("worse", "COMPLETE", {}, {"val/acc": 0.5})]
    run.onnx = {name: OnnxModel(name, OnnxFile(f"bytes of {name}".encode(), "torchscript"), 0.0)
                for name in (TEACHER, "best", "worse")}
    folder = run.paths.reports / "onnx"
    folder.mkdir(parents=True)
    (folder / "gone.onnx").write_bytes(b"a member of an earlier front")
    (folder / "notes.txt").write_text("not kdtune's")
    onnx_files.write(run)
    assert run.onnx_files == {TEACHER: folder / "teacher.onnx", "best": folder / "best.onnx"}
    assert (folder / "best.onnx").read_bytes() == b"bytes of best"
    assert (folder / "teacher.onnx").read_bytes() == f"bytes of {TEACHER}".encode()
    assert sorted(p.name for p in folder.iterdir()) == ["best.onnx", "notes.txt", "teacher.onnx"]
    run.onnx = {}  # runtime torch: nothing exported, nothing left to link
    onnx_files.write(run)
    assert run.onnx_files == {} and sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
