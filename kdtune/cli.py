"""Command line: ``kdtune STUDY`` (= ``run``), ``kdtune submit STUDY --address URL``, ``kdtune report STUDY``,
``kdtune rerun STUDY TRIAL_ID``, ``kdtune validate STUDY``, ``kdtune list``."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from pathlib import Path

from kdtune.errors import KdtuneError

COMMANDS = ("run", "submit", "report", "rerun", "validate", "list")
_ROOT_HELP = ("put every output location (reports, Ray's storage, the Optuna and MLflow stores, the cache) under "
              "ROOT/<study name>; ROOT must be absolute")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kdtune", description="Hyperparameter studies over knowledge distillation.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a study file end to end (the default command)")
    run.add_argument("study", type=Path, help="a study file, e.g. studies/pareto_mnist.yaml")
    run.add_argument(
        "--address", default=None,
        help="Ray cluster address; overrides ray.address in the study file and $RAY_ADDRESS (default: local Ray)",
    )
    run.add_argument("--root", default=None, help=_ROOT_HELP)
    run.add_argument("--wait", action="store_true",
                     help="if another driver is running this study, wait for it to finish instead of refusing")
    job = sub.add_parser("submit", help="run a study as a Ray job on a cluster (needs pip install -e '.[cluster]')")
    job.add_argument("study", type=Path, help="a study file inside the current folder, which is shipped to the job")
    job.add_argument("--address", required=True, help="the cluster's dashboard (job API), e.g. http://head:8265")
    job.add_argument("--root", default=None, help=_ROOT_HELP + " (on storage every node mounts)")
    job.add_argument("--wait", action="store_true", help="stream the job's logs until it ends; exit with its outcome")
    rep = sub.add_parser("report", help="rebuild a study's report from what is stored, training nothing")
    rep.add_argument("study", type=Path)
    rep.add_argument("--root", default=None, help=_ROOT_HELP)
    again = sub.add_parser("rerun", help="retrain one stored trial and compare its metrics with the stored ones")
    again.add_argument("study", type=Path)
    again.add_argument("trial_id", help="a trial id from the report or trials.csv")
    again.add_argument("--root", default=None, help=_ROOT_HELP)
    val = sub.add_parser("validate", help="check a study file without running it")
    val.add_argument("study", type=Path)
    sub.add_parser("list", help="list every registered dataset, model, loss, penalty and attack")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in COMMANDS and not argv[0].startswith("-"):
        argv.insert(0, "run")  # `kdtune STUDY` means `kdtune run STUDY`
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return _dispatch(args)
    except KdtuneError as err:
        print(f"kdtune: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("kdtune: interrupted; finished trials are stored: run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - a bug: one line here, the traceback in a file
        where = _save_traceback()
        first = str(err).splitlines()[0][:300] if str(err) else ""
        print(f"kdtune: internal error: {type(err).__name__}: {first} (traceback saved to {where}; "
              "please report it with the study file)", file=sys.stderr)
        return 1


def _save_traceback() -> Path:
    from kdtune.cache import cache_dir  # not kdtune.teacher: the error being reported may be torch's import

    path = cache_dir(None) / "last-error.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(traceback.format_exc())
    except OSError:
        path = Path("(unwritable)")
    return path


def _dispatch(args: argparse.Namespace) -> int:
    from kdtune.config import load_study

    if args.command == "list":
        _print_registries()
        return 0
    if args.command == "submit":
        from kdtune.submit import submit

        return submit(args.study, address=args.address, root=args.root, wait=args.wait)
    cfg = load_study(args.study)
    if getattr(args, "root", None) is not None:
        from kdtune.config import with_root

        cfg = with_root(cfg, args.root)
    if args.command == "validate":
        print(f"{args.study}: ok ({cfg.search.n_trials} trials over {', '.join(cfg.search.space)})")
        return 0
    from kdtune import compat

    compat.check_versions()  # one line naming the supported range, before anything starts
    compat.setup()  # Tune's environment and log filters, for this process and the Ray it starts
    from kdtune.study import rebuild_report, rerun_trial, run_study

    if args.command == "rerun":
        stored, again = rerun_trial(cfg, args.trial_id)
        _print_comparison(stored, again)
        return 0
    if args.command == "report":
        outcome = rebuild_report(cfg, study_path=str(args.study))
    else:  # the study resolves ray.address and $RAY_ADDRESS after --address
        outcome = run_study(cfg, address=args.address, study_path=str(args.study), wait=args.wait)
    n_ok = sum(r.status == "COMPLETE" for r in outcome.records)
    n_pruned = sum(r.status == "PRUNED" for r in outcome.records)
    stopped = f" ({n_pruned} stopped early)" if n_pruned else ""
    print(f"{n_ok}/{len(outcome.records)} trials complete{stopped}; hypervolume {outcome.hypervolume:.4f}")
    if outcome.pace is not None:
        print(f"sweep: {outcome.pace.text()}")
    print(f"report: {outcome.report['report_html']}")
    if outcome.mlflow_link is not None:
        print(f"mlflow: {outcome.mlflow_link}")
    return 0


def _print_comparison(stored: dict[str, float], again: dict[str, float]) -> None:
    print(f"{'metric':<28} {'stored':>12} {'rerun':>12}")
    for name in sorted(set(stored) | set(again)):
        a, b = stored.get(name), again.get(name)
        print(f"{name:<28} {'' if a is None else f'{a:.4g}':>12} {'' if b is None else f'{b:.4g}':>12}")


def _print_registries() -> None:
    import kdtune.components  # noqa: F401 - the built-in registries enroll themselves
    from kdtune.registry import registry_of

    plurals = {
        "dataset": "datasets", "model": "models", "method": "methods", "loss": "losses",
        "penalty": "penalties", "attack": "attacks",
    }
    for kind, plural in plurals.items():
        reg = registry_of(kind)
        print(f"{plural}:")
        for name in reg:
            print(f"  {name:<24} {reg.entry(name).description}")
        for form, what in reg.reference_forms:
            print(f"  {form:<24} {what}")
