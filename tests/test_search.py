"""Searching over components: switching a component's name, conditional entries, define-by-run."""

import optuna
import pytest
import yaml

from kdtune.config import load_study, with_overrides
from kdtune.errors import ConfigError
from kdtune.sweep import DefineByRun

STUDY = """
name: families
teacher: {model: {name: mlp, hidden: [32]}, epochs: 1}
student: {model: {name: mlp, hidden: [8]}, epochs: 1}
method: {name: hinton, temperature: 3.0, alpha: 0.5}
search:
  space:
    method.name: {type: categorical, choices: [hinton, ce]}
    method.temperature: {type: float, low: 1.0, high: 8.0, when: {method.name: [hinton]}}
  objectives: [{metric: val/acc, mode: max}]
  budget: 2
"""


def write(tmp_path, text):
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


def test_switching_a_component_keeps_only_the_parameters_it_accepts(tmp_path):
    cfg = load_study(write(tmp_path, STUDY))
    assert with_overrides(cfg, {"method.name": "ce"}).method.params == {}
    same = with_overrides(cfg, {"method.name": "hinton"})
    assert same.method.params == {"temperature": 3.0, "alpha": 0.5}  # the study's own settings stay
    both = with_overrides(cfg, {"method.temperature": 6.0, "method.name": "hinton"})
    assert both.method.params["temperature"] == 6.0  # the name applies first, whatever the order


def test_a_parameter_of_only_some_choices_needs_a_condition(tmp_path):
    text = STUDY.replace(", when: {method.name: [hinton]}", "")
    with pytest.raises(ConfigError) as err:
        load_study(write(tmp_path, text))
    message = str(err.value)
    assert "method.name='ce'" in message and "unexpected parameter 'temperature'" in message
    assert "add when: {method.name: [...]}" in message and "\n" not in message


@pytest.mark.parametrize(
    "change,expected",
    [
        ("when: {method.name: [hinton]}", None),
        ("when: {method.name: [hintn]}", "not among its choices"),
        ("when: {adversary.enabled: [true]}", "never sampled"),
    ],
)
def test_conditions_are_checked_at_load(tmp_path, change, expected):
    text = STUDY.replace("when: {method.name: [hinton]}", change)
    if expected is None:
        load_study(write(tmp_path, text))
        return
    with pytest.raises(ConfigError, match=expected):
        load_study(write(tmp_path, text))


def test_condition_must_follow_its_target(tmp_path):
    raw = yaml.safe_load(STUDY)
    space = raw["search"]["space"]
    raw["search"]["space"] = {"method.temperature": space["method.temperature"], "method.name": space["method.name"]}
    with pytest.raises(ConfigError, match="must come after method.name"):
        load_study(write(tmp_path, yaml.safe_dump(raw, sort_keys=False)))


def test_define_by_run_suggests_conditional_entries_only_when_active(tmp_path):
    cfg = load_study(write(tmp_path, STUDY))
    space = DefineByRun(cfg.search, cfg.to_raw())
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = []
    for _ in range(20):
        trial = study.ask()
        space(trial)
        seen.append(dict(trial.params))
        study.tell(trial, 0.0)
    for params in seen:
        assert ("method.temperature" in params) == (params["method.name"] == "hinton")
        assert with_overrides(cfg, params)  # every sampled configuration is valid
    assert {p["method.name"] for p in seen} == {"hinton", "ce"}
