"""report.reference: the source's numbers in a study file are validated at load."""

import pytest

from kdtune.config import load_study
from kdtune.errors import ConfigError
from tests.studies import base_study, write_study


def with_reference() -> dict:
    """The base study searching the method's name, with the source's results for the teacher and for KD."""
    raw = base_study(report={"reference": {
        "source": "Paper, Table 1 (full MNIST there; the 5k subset here)",
        "rows": [
            {"label": "teacher", "teacher": True, "metrics": {"test/acc": 0.99}},
            {"label": "KD", "match": {"method.name": "hinton"}, "metrics": {"test/acc": 0.987}},
        ],
    }})
    raw["search"]["space"] = {"method.name": {"type": "categorical", "choices": ["hinton", "ce"]}}
    return raw


def load(tmp_path, raw):
    return load_study(write_study(tmp_path / "s.yaml", raw))


def test_a_valid_reference_loads_as_records(tmp_path):
    ref = load(tmp_path, with_reference()).report.reference.record()
    assert ref.source.startswith("Paper") and [r.label for r in ref.rows] == ["teacher", "KD"]
    assert ref.rows[1].match == {"method.name": "hinton"} and ref.rows[0].teacher


@pytest.mark.parametrize(
    "row,key,value,expected",
    [
        (1, "metrics", {"test/accuracy": 0.987}, "unknown metric 'test/accuracy'"),
        (1, "match", {"method.nam": "hinton"}, "'method.nam' is not searched"),
        (1, "match", None, "either match"),  # None: the key left out
        (0, "metrics", {}, "report.reference.rows.0.metrics"),
    ],
    ids=["unknown_metric", "unsearched_match", "no_match", "no_metrics"],
)
def test_bad_references_fail_at_load_with_the_field(tmp_path, row, key, value, expected):
    raw = with_reference()
    rows = raw["report"]["reference"]["rows"]
    if value is None:
        del rows[row][key]
    else:
        rows[row][key] = value
    with pytest.raises(ConfigError, match=expected):
        load(tmp_path, raw)
