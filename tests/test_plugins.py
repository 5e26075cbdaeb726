"""Users' own code: plugins, models by reference, pretrained teachers; and what a study file may not run."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from kdtune import cli
from kdtune.config import load_study
from kdtune.data import MNIST_INFO
from kdtune.errors import ConfigError
from kdtune.models import MODELS, build_model
from tests.own_data import write_folder

PLUGIN = '''
import os
from pathlib import Path

from torch import nn

from kdtune import MODELS


def _mark(what):
    folder = os.environ.get("PLUGPKG_MARKS")
    if folder:
        Path(folder, f"{what}-{os.getpid()}").touch()


@MODELS.register("plug_mlp")
def plug_mlp(*, input_shape, n_classes, width: int = 16):
    """A plugin's MLP."""
    _mark("plug_mlp")
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, width), nn.ReLU(), nn.Linear(width, n_classes))


def build_student(n_classes, input_shape, depth=1, width=8):
    """A student built by a plain function."""
    _mark("build_student")
    c, h, w = input_shape
    layers = [nn.Flatten(), nn.Linear(c * h * w, width), nn.ReLU()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, n_classes))


def not_a_model(n_classes):
    return "a string"


NOT_CALLABLE = 3
'''

BASE = {
    "name": "own",
    "dataset": {"name": "mnist_5k", "n_train": 200, "n_val": 100, "n_test": 100},
    "teacher": {"model": {"name": "mlp", "hidden": [32]}, "epochs": 1},
    "student": {"model": {"name": "mlp", "hidden": [8]}, "epochs": 1},
    "evaluation": {"eps": [0.1], "pgd_steps": 2, "fgsm": False, "n_jacobian": 8,
                   "latency": {"batch_sizes": [1], "warmup": 1, "repeats": 1, "n_calls": 2}},
    "search": {"space": {"method.alpha": {"type": "categorical", "choices": [0.5, 0.9]}},
               "objectives": [{"metric": "val/acc", "mode": "max"}, {"metric": "latency/ms_b1", "mode": "min"}],
               "sampler": {"name": "grid"}, "max_concurrent": 1},
    "resources": {"checkpoint_every_s": 0},
}


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A user's project: the package ``plugpkg`` (its plugin module ``plugpkg.parts``) on the path."""
    package = tmp_path / "project" / "plugpkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "parts.py").write_text(PLUGIN)
    (package / "broken.py").write_text("raise RuntimeError('the plugin is broken')\n")
    monkeypatch.syspath_prepend(str(package.parent))
    for name in [m for m in sys.modules if m.startswith("plugpkg")]:
        monkeypatch.delitem(sys.modules, name)
    return package.parent


def study(folder: Path, **changes) -> Path:
    raw = {**BASE, **changes}
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def test_a_plugin_registers_models_a_study_can_name(project):
    cfg = load_study(study(project, plugins=["plugpkg.parts"], student={"model": {"name": "plug_mlp", "width": 12}}))
    assert cfg.plugins == ["plugpkg.parts"] and cfg.student.model.params == {"width": 12}
    model = build_model("plug_mlp", {"width": 12}, MNIST_INFO)
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_a_module_function_model_is_validated_against_its_signature_and_built(project):
    ref = "plugpkg.parts:build_student"
    cfg = load_study(study(project, plugins=["plugpkg.parts"], student={"model": {"name": ref, "depth": 2}}))
    assert cfg.student.model.params == {"depth": 2, "width": 8}  # the function's defaults filled in
    net = build_model(ref, cfg.student.model.params, MNIST_INFO).net
    assert [m.out_features for m in net if isinstance(m, nn.Linear)] == [8, 8, 10]  # n_classes passed in
    with pytest.raises(ConfigError, match=r"student.model: model 'plugpkg.parts:build_student': unexpected "
                                          r"parameter 'widht' \(did you mean 'width'\?\)"):
        load_study(study(project, plugins=["plugpkg.parts"], student={"model": {"name": ref, "widht": 4}}))


def test_a_torchvision_model_is_adapted_to_the_datas_channels_and_classes():
    model = build_model("torchvision:resnet18", {}, MNIST_INFO)
    assert model.net.conv1.in_channels == 1 and model.net.fc.out_features == 10
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert MODELS.validate("torchvision:resnet18", {"zero_init_residual": True}) == {"zero_init_residual": True}


def test_a_timm_model_without_timm_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # as if timm were not installed
    with pytest.raises(ConfigError, match=r"^model 'timm:resnet18' needs timm, which is not installed; pip install timm$"):
        MODELS.entry("timm:resnet18")


@pytest.mark.parametrize("ref", ["subprocess:run", "os:system", "builtins:eval", "shutil:rmtree", "kdtune.cli:main"])
def test_a_study_file_cannot_reference_code_outside_its_plugins(project, ref, tmp_path):
    path = study(project, plugins=["plugpkg.parts"], student={"model": {"name": ref}})
    with pytest.raises(ConfigError) as info:
        load_study(path)
    message = str(info.value)
    assert "may only reference code in its plugins' packages" in message and "\n" not in message
    assert ref.split(":")[0] not in sys.modules or ref.split(":")[0] in ("subprocess", "os", "builtins", "shutil",
                                                                         "kdtune.cli")


@pytest.mark.parametrize("plugins,student,expected", [
    (["plugpkg.nope"], None, r"plugins\[0\]: no module named 'plugpkg.nope'; install your project"),
    (["plugpkg.broken"], None, r"plugins\[0\]: plugin 'plugpkg.broken' failed to import: RuntimeError: the plugin "
                               r"is broken; fix the plugin"),
    (["plugpkg.parts"], "plugpkg.nowhere:build", r"model 'plugpkg.nowhere:build': no module named 'plugpkg.nowhere'"),
    (["plugpkg.parts"], "plugpkg.parts:missing", r"module 'plugpkg.parts' has no attribute 'missing'"),
    (["plugpkg.parts"], "plugpkg.parts:NOT_CALLABLE", r"'NOT_CALLABLE' is not callable"),
])
def test_a_bad_reference_is_one_line_and_exit_code_2(project, capsys, plugins, student, expected):
    changes = {"plugins": plugins}
    if student:
        changes["student"] = {"model": {"name": student}}
    path = study(project, **changes)
    before = sorted(p.name for p in project.iterdir())
    assert cli.main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("kdtune: error: ")
    import re

    assert re.search(expected, err), err
    assert sorted(p.name for p in project.iterdir()) == before  # nothing written


def test_a_reference_that_returns_no_module_fails_before_anything_is_written(project, monkeypatch):
    from kdtune.study import StudyPaths, StudyRun
    from kdtune.study.stages import check

    cfg = load_study(study(project, plugins=["plugpkg.parts"], student={"model": {"name": "plugpkg.parts:not_a_model"}}))
    run = StudyRun(cfg, StudyPaths.of(cfg, project / "work"), echo=lambda line: None)
    with pytest.raises(ConfigError, match=r"returned a str, not a torch.nn.Module; return the network itself"):
        check.check(run)
    assert not (project / "work").exists()


# ---------------------------------------------------------------- a pretrained teacher


def _saved_teacher(folder: Path, *, key: str | None = None, hidden=(32,)) -> tuple[Path, nn.Module]:
    torch.manual_seed(3)
    net = MODELS.build("mlp", hidden=list(hidden), input_shape=(1, 28, 28), n_classes=10)
    path = folder / "teacher.pt"
    torch.save({key: net.state_dict(), "epoch": 7} if key else net.state_dict(), path)
    return path, net


@pytest.mark.parametrize("key", [None, "model_state"])
def test_a_pretrained_teacher_is_loaded_as_saved_and_fed_raw_pixels(tmp_path, small_data, key):
    from kdtune.pretrained import load_pretrained

    path, net = _saved_teacher(tmp_path, key=key)
    spec = load_study(study(tmp_path, teacher={"model": {"name": "mlp", "hidden": [32]}, "weights": "teacher.pt",
                                               **({"weights_key": key} if key else {})})).teacher
    teacher = load_pretrained(spec, small_data, workdir=tmp_path)
    x = small_data.test.x[:5]
    torch.testing.assert_close(teacher.model(x), net(x))  # no normalization wrapped around the user's weights
    assert teacher.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_pretrained_teachers_preprocessing_is_applied(tmp_path, small_data):
    from kdtune.pretrained import load_pretrained

    _, net = _saved_teacher(tmp_path)
    pre = {"pixel_max": 255.0, "mean": [33.0], "std": [78.0]}
    spec = load_study(study(tmp_path, teacher={"model": {"name": "mlp", "hidden": [32]}, "weights": "teacher.pt",
                                               "preprocessing": pre})).teacher
    x = small_data.test.x[:5]
    torch.testing.assert_close(load_pretrained(spec, small_data, workdir=tmp_path).model(x), net((x * 255 - 33) / 78))


@pytest.mark.parametrize("teacher,expected", [
    ({"model": {"name": "mlp", "hidden": [64]}}, r"does not fit teacher.model 'mlp': shape 1.weight \(32, 784\) "
                                                 r"in the file, \(64, 784\) in the model"),
    ({"model": {"name": "mlp", "hidden": [32, 32]}}, r"missing 5.weight, 5.bias; shape 3.weight \(10, 32\) in the file"),
    ({"model": {"name": "mlp", "hidden": [32]}, "weights_key": "state"}, r"has no key 'state'"),
    ({"model": {"name": "mlp", "hidden": [32]}, "weights": "nowhere.pt"}, r"teacher.weights: no file at"),
])
def test_weights_that_do_not_fit_are_one_line_before_any_trial(tmp_path, small_data, teacher, expected):
    from kdtune.pretrained import load_pretrained

    _saved_teacher(tmp_path)
    spec = load_study(study(tmp_path, teacher={"weights": "teacher.pt", **teacher})).teacher
    with pytest.raises(ConfigError, match=expected) as info:
        load_pretrained(spec, small_data, workdir=tmp_path)
    assert "\n" not in str(info.value) and info.value.exit_code == 2


def test_pretrained_only_settings_need_weights(tmp_path):
    with pytest.raises(ConfigError, match="weights_key and preprocessing describe a pretrained teacher"):
        load_study(study(tmp_path, teacher={"model": {"name": "mlp"}, "weights_key": "state_dict"}))


# ---------------------------------------------------------------- real Ray workers


@pytest.mark.slow  # a whole study through Ray, Optuna and MLflow in a fresh process
def test_a_plugin_a_pretrained_teacher_and_streamed_data_are_used_by_real_ray_workers(project, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    _saved_teacher(project)
    write_folder(project / "data", splits=("train", "test"), classes=tuple("0123456789"), n_per_class=8,
                 size=(28, 28))
    path = study(project, plugins=["plugpkg.parts"],
                 dataset={"name": "image_folder", "root": "data", "stream": True, "workers": 1},  # DataLoader workers
                 teacher={"model": {"name": "mlp", "hidden": [32]}, "weights": "teacher.pt"},
                 student={"model": {"name": "plugpkg.parts:build_student", "width": 8}, "epochs": 1})
    env = {**os.environ, "PLUGPKG_MARKS": str(marks), "KDTUNE_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(project), os.environ.get("PYTHONPATH", "")])}
    env.pop("MLFLOW_TRACKING_URI", None)
    driver = subprocess.Popen([sys.executable, "-m", "kdtune", str(path)], cwd=project, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = driver.communicate(timeout=600)
    assert driver.returncode == 0, out
    assert "teacher loaded from" in out and "2/2 trials complete" in out
    assert "70 train / 10 val / 80 test (streamed from its files)" in out
    builders = {int(p.name.rsplit("-", 1)[1]) for p in marks.iterdir() if p.name.startswith("build_student-")}
    assert builders - {driver.pid}, builders  # the student was built in Ray's worker processes, not only here
    report = (project / "reports" / "own" / "report.md").read_text(encoding="utf-8")
    assert hashlib.sha256((project / "teacher.pt").read_bytes()).hexdigest() in report


@pytest.mark.slow  # a fresh interpreter: seconds of imports
def test_kdtune_root_exports_the_registries_lazily():
    code = textwrap.dedent("""
        import sys
        import kdtune
        print("torch" in sys.modules)
        from kdtune import ATTACKS, DATASETS, LOSSES, METHODS, MODELS, PENALTIES
        print([r.kind for r in (ATTACKS, DATASETS, LOSSES, METHODS, MODELS, PENALTIES)])
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split("\n")[:2] == ["False", "['attack', 'dataset', 'loss', 'method', 'model', 'penalty']"]


@pytest.mark.slow  # a ResNet-18 epoch per method
@pytest.mark.parametrize("method", ["cosine", "fitnets"])
def test_feature_taps_work_on_models_by_reference_by_module_name(project, small_data, tmp_path, method):
    """A torchvision student tapped at ``net.avgpool``, a plugin's function-built teacher at ``net.3``."""
    from kdtune.evaluate import logits_of
    from kdtune.methods import MethodContext, build_method
    from kdtune.spec import TrainSpec
    from kdtune.train import fit_student

    load_study(study(project, plugins=["plugpkg.parts"]))  # the plugin, loaded as a study loads it
    teacher = build_model("plugpkg.parts:build_student", {"width": 12}, small_data.info).eval()
    student = build_model("torchvision:resnet18", {}, small_data.info)
    spec = TrainSpec.model_validate({"model": {"name": "torchvision:resnet18"}, "epochs": 1, "batch_size": 64})
    data = small_data  # 600 training images: one epoch of ResNet-18 on the CPU is a few seconds
    ctx = MethodContext(data, teacher, logits_of(teacher, data.train.x), spec, 0, tmp_path)
    distiller = build_method(method, {"teacher_layer": "net.3", "student_layer": "net.avgpool"}, ctx)
    history = fit_student(student, data, spec, distiller=distiller, seed=0)
    assert len(history) == 1 and all(torch.isfinite(torch.tensor(v)) for v in history[0].values())
    term = {"cosine": "train/cosine", "fitnets": "train/hint"}[method]
    assert history[0][term] > 0  # the feature term was computed on the named layers
