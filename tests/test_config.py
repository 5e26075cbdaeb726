"""Tests for kdtune.config: every malformed study in tests/bad_studies fails with one helpful line.

Each corpus file starts with ``# expect: <substring>``, a substring the one-line error must contain.
The same files go through ``kdtune validate`` in-process: exit 2, one stderr line, no traceback,
nothing written to the working directory (one file carries a YAML tag that would run
``touch kdtune_pwned`` if it were ever constructed).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from kdtune import cli
from kdtune.config import load_study, registry_of, validate_study, with_overrides
from kdtune.errors import ConfigError
from kdtune.metrics import trial_metric_names as metric_names
from tests.studies import base_study, study_yaml, write_study

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
BAD = sorted((TESTS / "bad_studies").glob("*.yaml"))
STUDIES = sorted((REPO / "studies").glob("*.yaml"))

MINI = study_yaml(base_study())

# Malformed files that cannot carry a ``# expect:`` header: written by the test itself.
GENERATED = {
    "empty.yaml": (b"", "must be a YAML mapping"),
    "whitespace.yaml": (b"\n   \n", "must be a YAML mapping"),
    "latin1.yaml": (MINI.replace("name: mini", "name: mini\ndescription: caf\xe9").encode("latin-1"), "not UTF-8"),
    "utf16.yaml": (MINI.encode("utf-16"), "not UTF-8 text (byte 0)"),
}


def _expected(path: Path) -> str:
    first = path.read_text(encoding="utf-8").partition("\n")[0]
    assert first.startswith("# expect: "), f"{path.name}: first line must be '# expect: <substring>'"
    return first.removeprefix("# expect: ").strip()


def _cases() -> list:
    cases = [pytest.param(p, _expected(p), id=p.stem) for p in BAD]
    cases += [pytest.param(name, expect, id=Path(name).stem) for name, (_, expect) in GENERATED.items()]
    return cases


def _materialize(path_or_name: Path | str, tmp_path: Path) -> Path:
    if isinstance(path_or_name, Path):
        return path_or_name
    path = tmp_path / "generated" / path_or_name
    path.parent.mkdir()
    path.write_bytes(GENERATED[path_or_name][0])
    return path


def _write(tmp_path: Path, raw: dict | str) -> Path:
    return write_study(tmp_path / "study.yaml", raw)


def _grid(choices: dict[str, list]) -> dict:
    """The base study searching ``choices`` ({path: values}) on a grid (no budget: the grid's size)."""
    raw = base_study()
    raw["search"]["space"] = {path: {"type": "categorical", "choices": values} for path, values in choices.items()}
    raw["search"]["sampler"] = {"name": "grid"}
    del raw["search"]["budget"]
    return raw


def _numbers_as_typed() -> dict:
    """The base study with numbers written in exponent notation, as people type them: the YAML text has
    ``lr: 1e-3``, which PyYAML reads as a string."""
    raw = base_study(method={"name": "hinton", "temperature": "2e0"}, penalties={"jacobian": {"weight": "1e-2"}})
    raw["teacher"].update(lr="1e-3", weight_decay="5e-4")
    raw["search"]["space"]["method.temperature"].update(low="1e-1", high="8e0", log=True)
    return raw


# ---------------------------------------------------------------- the malformed corpus


def test_corpus_is_big_enough():
    assert len(BAD) >= 30


@pytest.mark.parametrize(("study", "expect"), _cases())
def test_bad_study_raises_one_line(study, expect, tmp_path, clean_cwd):
    path = _materialize(study, tmp_path)
    with pytest.raises(ConfigError) as info:
        load_study(path)
    message = str(info.value)
    assert "\n" not in message
    assert expect in message
    assert path.name in message
    assert info.value.exit_code == 2
    assert list(clean_cwd.iterdir()) == []


@pytest.mark.parametrize(("study", "expect"), _cases())
def test_bad_study_via_cli(study, expect, tmp_path, clean_cwd, capsys):
    path = _materialize(study, tmp_path)
    code = cli.main(["validate", str(path)])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert err.startswith("kdtune: error: ")
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert expect in err
    assert list(clean_cwd.iterdir()) == []


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ConfigError, match="no such study file"):
        load_study(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_study(tmp_path)


# ---------------------------------------------------------------- valid studies


@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_every_shipped_study_loads(path):
    cfg = load_study(path)
    assert cfg.search.n_trials >= 1


@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_to_raw_round_trips(path):
    cfg = load_study(path)
    raw = cfg.to_raw()
    assert validate_study(raw, source="raw") == cfg
    assert yaml.safe_load(yaml.safe_dump(raw)) == raw  # the YAML layout is plain data


VALID_VARIANTS = {
    "minimal": base_study(),
    "dataset_as_bare_name": base_study(dataset="mnist_5k"),
    "penalty_without_params": base_study(penalties={"jacobian": None}),
    "adversary_disabled": base_study(adversary={"enabled": False, "attack": {"name": "pgd"}}),
    "grid_without_budget": _grid({"method.temperature": [1.0, 4.0]}),
    "numeric_strings": _numbers_as_typed(),
}


@pytest.mark.parametrize("raw", VALID_VARIANTS.values(), ids=VALID_VARIANTS)
def test_valid_variants_load(raw, tmp_path):
    load_study(_write(tmp_path, raw))


def test_numeric_strings_are_coerced_to_float(tmp_path):
    text = study_yaml(_numbers_as_typed())
    assert "lr: 1e-3\n" in text and "high: 8e0\n" in text  # written plain, as typed
    assert yaml.safe_load(text)["teacher"]["lr"] == "1e-3"  # the PyYAML gotcha this guards against
    cfg = load_study(_write(tmp_path, text))
    assert cfg.teacher.lr == 0.001 and isinstance(cfg.teacher.lr, float)
    assert cfg.teacher.weight_decay == 5e-4
    assert cfg.method.params["temperature"] == 2.0 and isinstance(cfg.method.params["temperature"], float)
    assert cfg.penalties["jacobian"].weight == 0.01
    dist = cfg.search.space["method.temperature"]
    assert (dist.low, dist.high) == (0.1, 8.0)


def test_registry_defaults_are_filled(tmp_path):
    cfg = load_study(_write(tmp_path, base_study()))
    specs = [(cfg.teacher.model, "model"), (cfg.student.model, "model"), (cfg.method, "method"), (cfg.dataset, "dataset")]
    for spec, kind in specs:
        defaults = registry_of(kind).entry(spec.name).defaults
        assert set(spec.params) == set(defaults)
    assert cfg.method.params == registry_of("method").entry("hinton").defaults
    assert cfg.teacher.model.params == registry_of("model").entry("mlp").defaults
    assert cfg.student.model.params["hidden"] == [16]  # given values win over defaults
    assert cfg.to_raw()["method"] == {"name": "hinton", **cfg.method.params}


def test_with_overrides_applies_dotted_paths_and_list_indices():
    cfg = load_study(REPO / "studies" / "smoke.yaml")
    new = with_overrides(cfg, {"student.model.hidden.0": 48, "method.alpha": 0.5, "penalties.jacobian.weight": "1e-2"})
    assert new.student.model.params["hidden"] == [48]
    assert new.method.params["alpha"] == 0.5
    assert new.penalties["jacobian"].weight == 0.01
    assert new.method.params["temperature"] == cfg.method.params["temperature"]
    assert cfg.student.model.params["hidden"] == [32]  # the original is untouched
    assert with_overrides(cfg, {}) == cfg


@pytest.mark.parametrize(
    ("overrides", "expect"),
    [
        ({"method.alpha": 2.0}, "parameter 'alpha'"),
        ({"student.model.hidden.5": 8}, "'5' is not an index of a list of length 1"),
        ({"student.epocs": 3}, "did you mean 'epochs'"),
        ({"teacher.epochs": 0}, "teacher.epochs"),
        ({"seed.x": 1}, "not inside a mapping or list"),
    ],
)
def test_bad_override_raises_config_error(overrides, expect):
    cfg = load_study(REPO / "studies" / "smoke.yaml")
    with pytest.raises(ConfigError) as info:
        with_overrides(cfg, overrides)
    assert expect in str(info.value) and "\n" not in str(info.value)


def test_grid_n_trials_is_product_of_choice_counts(tmp_path):
    path = REPO / "studies" / "seed000_combinations.yaml"
    space = yaml.safe_load(path.read_text())["search"]["space"]
    assert load_study(path).search.n_trials == math.prod(len(d["choices"]) for d in space.values())
    raw = _grid({"method.temperature": [1.0, 2.0, 4.0], "student.model.hidden.0": [8, 16], "method.alpha": [0.5]})
    assert load_study(_write(tmp_path, raw)).search.n_trials == 6


def test_unknown_objective_lists_known_metrics(tmp_path):
    text = (REPO / "studies" / "smoke.yaml").read_text().replace("metric: val/acc,", "metric: val/accuracy,")
    cfg_eval = load_study(REPO / "studies" / "smoke.yaml").evaluation
    with pytest.raises(ConfigError) as info:
        load_study(_write(tmp_path, text))
    message = str(info.value)
    assert "unknown metric 'val/accuracy' (did you mean 'val/acc'?)" in message
    known = message.split("known: ", 1)[1].split(", ")
    assert known == [m for m in metric_names(cfg_eval) if m.startswith(("val/", "latency/ms_")) or m in ("model/params", "model/flops", "model/bytes")]


@pytest.mark.parametrize("metric,fix", [
    ("test/acc", "search on 'val/acc' instead"),
    ("test/robust_acc@0.1", "search on 'val/robust_acc@0.1' instead"),
    ("jacobian/norm", "measured on the test split"),
])
def test_an_objective_measured_on_the_test_split_is_rejected_at_load(tmp_path, metric, fix):
    text = (REPO / "studies" / "smoke.yaml").read_text().replace("metric: val/acc,", f"metric: {metric},")
    with pytest.raises(ConfigError) as info:
        load_study(_write(tmp_path, text))
    message = str(info.value)
    assert f"search.objectives[0]: '{metric}' is measured on the test split" in message and fix in message
    assert message.count("\n") == 0


@pytest.mark.parametrize("path", [p for p in STUDIES if p.name.startswith(("seed00", "families"))], ids=lambda p: p.stem)
def test_method_comparisons_run_over_three_seeds_or_more(path):
    """A one-seed comparison of methods shows 1-point differences that are noise: these repeat over seeds."""
    evaluation = load_study(path).evaluation
    assert evaluation.seeds >= 3
    grid = load_study(path).search.sampler.name == "grid"
    assert evaluation.seed_members == ("all" if grid else "front")  # a grid compares every member


def test_the_flagship_study_asks_whether_distillation_paid():
    evaluation = load_study(REPO / "studies" / "pareto_mnist.yaml").evaluation
    assert evaluation.ablation.enabled and evaluation.seeds >= 3
