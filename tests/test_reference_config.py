"""report.reference: the source's numbers in a study file are validated at load."""

import pytest

from kdtune.config import load_study
from kdtune.errors import ConfigError

STUDY = """
name: ref
teacher: {model: {name: mlp, hidden: [32]}, epochs: 1}
student: {model: {name: mlp, hidden: [8]}, epochs: 1}
search:
  space:
    method.name: {type: categorical, choices: [hinton, ce]}
  objectives: [{metric: val/acc, mode: max}]
  budget: 2
report:
  reference:
    source: "Paper, Table 1 (full MNIST there; the 5k subset here)"
    rows:
      - {label: teacher, teacher: true, metrics: {test/acc: 0.99}}
      - {label: KD, match: {method.name: hinton}, metrics: {test/acc: 0.987}}
"""


def load(tmp_path, text):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return load_study(path)


def test_a_valid_reference_loads_as_records(tmp_path):
    ref = load(tmp_path, STUDY).report.reference.record()
    assert ref.source.startswith("Paper") and [r.label for r in ref.rows] == ["teacher", "KD"]
    assert ref.rows[1].match == {"method.name": "hinton"} and ref.rows[0].teacher


@pytest.mark.parametrize(
    "old,new,expected",
    [
        ("metrics: {test/acc: 0.987}", "metrics: {test/accuracy: 0.987}", "unknown metric 'test/accuracy'"),
        ("match: {method.name: hinton}", "match: {method.nam: hinton}", "'method.nam' is not searched"),
        ("{label: KD, match: {method.name: hinton}, ", "{label: KD, ", "either match"),
        ("metrics: {test/acc: 0.99}", "metrics: {}", "report.reference.rows.0.metrics"),
    ],
)
def test_bad_references_fail_at_load_with_the_field(tmp_path, old, new, expected):
    with pytest.raises(ConfigError, match=expected):
        load(tmp_path, STUDY.replace(old, new))
