"""Searching over components: switching a component's name, conditional entries, define-by-run."""

import copy

import optuna
import pytest

from kdtune.config import load_study, with_overrides
from kdtune.errors import ConfigError
from kdtune.sweep import DefineByRun
from tests.studies import base_study, write_study

HINTON_ONLY = {"method.name": ["hinton"]}


def families(when: dict | None = HINTON_ONLY) -> dict:
    """The base study searching the method's name, and hinton's temperature ``when`` the condition holds."""
    raw = base_study(method={"name": "hinton", "temperature": 3.0, "alpha": 0.5})
    temperature = {"type": "float", "low": 1.0, "high": 8.0}
    if when is not None:
        temperature["when"] = copy.deepcopy(when)
    raw["search"]["space"] = {
        "method.name": {"type": "categorical", "choices": ["hinton", "ce"]},
        "method.temperature": temperature,
    }
    return raw


def write(tmp_path, raw):
    return write_study(tmp_path / "study.yaml", raw)


def test_switching_a_component_keeps_only_the_parameters_it_accepts(tmp_path):
    cfg = load_study(write(tmp_path, families()))
    assert with_overrides(cfg, {"method.name": "ce"}).method.params == {}
    same = with_overrides(cfg, {"method.name": "hinton"})
    assert same.method.params == {"temperature": 3.0, "alpha": 0.5}  # the study's own settings stay
    both = with_overrides(cfg, {"method.temperature": 6.0, "method.name": "hinton"})
    assert both.method.params["temperature"] == 6.0  # the name applies first, whatever the order


def test_a_parameter_of_only_some_choices_needs_a_condition(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_study(write(tmp_path, families(when=None)))
    message = str(err.value)
    assert "method.name='ce'" in message and "unexpected parameter 'temperature'" in message
    assert "add when: {method.name: [...]}" in message and "\n" not in message


@pytest.mark.parametrize(
    "when,expected",
    [
        (HINTON_ONLY, None),
        ({"method.name": ["hintn"]}, "not among its choices"),
        ({"adversary.enabled": [True]}, "never sampled"),
    ],
    ids=["hinton", "misspelled_choice", "never_sampled"],
)
def test_conditions_are_checked_at_load(tmp_path, when, expected):
    path = write(tmp_path, families(when))
    if expected is None:
        load_study(path)
        return
    with pytest.raises(ConfigError, match=expected):
        load_study(path)


def test_condition_must_follow_its_target(tmp_path):
    raw = families()
    space = raw["search"]["space"]
    raw["search"]["space"] = {"method.temperature": space["method.temperature"], "method.name": space["method.name"]}
    with pytest.raises(ConfigError, match="must come after method.name"):
        load_study(write(tmp_path, raw))


def test_define_by_run_suggests_conditional_entries_only_when_active(tmp_path):
    cfg = load_study(write(tmp_path, families()))
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
