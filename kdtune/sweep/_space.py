"""The search space as Optuna sees it: the sampler and the define-by-run space of a study."""

from __future__ import annotations

from typing import Any

import optuna

from kdtune.spec import SearchSpec, get_path


def build_sampler(search: SearchSpec, seed: int) -> optuna.samplers.BaseSampler:
    s, kind = search.sampler, search.sampler_kind
    if kind == "grid":
        return optuna.samplers.GridSampler({p: d.choices for p, d in search.space.items()}, seed=seed)  # type: ignore[union-attr]
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=s.population_size or 20, seed=seed)
    if kind == "gp":
        # Sample-efficient where trials are expensive: ahead of TPE and random search at 50 trials
        # (benchmarks/search.py); each suggestion fits a GP per objective (0.5-2 s on 2 cores, growing with
        # the trials), which is small next to a real trial; `tpe` is the cheaper choice for very short trials.
        return optuna.samplers.GPSampler(
            n_startup_trials=s.n_startup_trials or 10, seed=seed, warn_independent_sampling=False,
        )
    # TPE's default of 10 start-up trials would make a small study pure random search.
    n_startup = s.n_startup_trials or min(10, max(2, search.n_trials // 3))
    # group=True lets multivariate TPE model conditional (define-by-run) spaces per sub-space.
    return optuna.samplers.TPESampler(n_startup_trials=n_startup, multivariate=True, group=True, seed=seed)


class DefineByRun:
    """Optuna define-by-run space: each YAML path becomes one suggested parameter of that name.

    A conditional entry (``when``) is suggested only when the values sampled before it, or the
    study's fixed settings, satisfy its condition. A class rather than a closure so Tune can pickle
    the searcher into its experiment state.
    """

    def __init__(self, search: SearchSpec, base: dict[str, Any]) -> None:
        self.search, self.base = search, base

    def __call__(self, trial: optuna.Trial) -> None:
        chosen: dict[str, Any] = {}

        def value_at(path: str) -> Any:
            return chosen[path] if path in chosen else get_path(self.base, path)

        for path, d in self.search.space.items():
            if not d.active(value_at):
                continue
            if d.type == "float":
                chosen[path] = trial.suggest_float(path, d.low, d.high, log=d.log)
            elif d.type == "int":
                chosen[path] = trial.suggest_int(path, d.low, d.high, log=d.log, step=d.step)
            else:
                chosen[path] = trial.suggest_categorical(path, d.choices)
