"""kdtune.records: the typed provenance of a student and its flat stored form."""

import pytest

from kdtune.records import Provenance


def test_provenance_round_trips_through_its_flat_form():
    synthetic = Provenance("noise", "synthetic", "nothing", n=2000, objective="spectral")
    flat = synthetic.as_dict()
    assert flat == {"method": "noise", "transfer_set": "synthetic", "from_real_data": "nothing", "n": "2000",
                    "objective": "spectral"}
    assert Provenance.from_dict(flat) == synthetic
    assert Provenance.from_dict({"method": "hinton"}) == Provenance("hinton", "unknown", "unknown")


def test_an_unknown_provenance_field_is_refused():
    with pytest.raises(ValueError, match=r"unknown provenance field\(s\) \['cache'\]"):
        Provenance.from_dict({"method": "noise", "cache": "/tmp/x.pt"})
