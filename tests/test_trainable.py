"""kdtune.compat.tune's adjustment to Ray Tune's trainable actors, which every worker of a study's Ray job
runs first (the rest of the trainable is exercised through studies: tests/test_study.py,
tests/test_worker_retry.py)."""

from __future__ import annotations

import pytest

from tests.fresh_python import fresh_python


@pytest.mark.slow  # a fresh interpreter: seconds of imports
def test_a_trial_actor_does_not_import_ipython_to_disable_a_shell_it_does_not_have():
    lines = fresh_python("""
        import sys
        import kdtune.sweep._trainable
        from ray.tune.trainable import trainable
        print(hasattr(trainable.disable_ipython, "__wrapped__"))  # importing kdtune patches nothing
        from kdtune.compat.tune import skip_ipython_in_trials
        skip_ipython_in_trials()
        # what Trainable.__init__ calls in every actor: it must be the guarded version
        print(trainable.Trainable.__init__.__globals__["disable_ipython"] is trainable.disable_ipython)
        print(hasattr(trainable.disable_ipython, "__wrapped__"))
        trainable.disable_ipython()
        print("IPython" in sys.modules)
    """)
    assert lines == ["False", "True", "True", "False"]


def test_every_worker_of_a_study_job_runs_the_adjustment_first():
    import importlib

    from kdtune.compat.tune import skip_ipython_in_trials
    from kdtune.sweep._cluster import WORKERS

    module, name = WORKERS["worker_process_setup_hook"].rsplit(".", 1)
    assert getattr(importlib.import_module(module), name) is skip_ipython_in_trials


def test_a_process_with_an_ipython_shell_still_gets_it_cleared():
    pytest.importorskip("IPython")
    from IPython.core.interactiveshell import InteractiveShell
    from ray.tune.trainable import trainable

    from kdtune.compat.tune import skip_ipython_in_trials

    skip_ipython_in_trials()
    InteractiveShell.instance()
    assert InteractiveShell.initialized()
    trainable.disable_ipython()
    assert not InteractiveShell.initialized()
