"""Stage: gradient-masking sanity checks (arXiv:1902.06705) on the teacher and every complete trial."""

from __future__ import annotations

from dataclasses import replace

from kdtune import metrics
from kdtune.robustness import masking_checks
from kdtune.study._run import StudyRun

AUTOATTACK = metrics.ATTACK_KINDS["autoattack"]


def check(run: StudyRun) -> None:
    """``run.flags``: per model, the checks it fails. PGD and FGSM are checked on the whole test split;
    AutoAttack, which sees only its first ``n_samples`` images, against clean and PGD accuracy on those
    same images."""
    evaluation = run.cfg.evaluation

    def checks(measured: dict[str, float]) -> list[str]:
        parsed = {metrics.Metric.parse(k): v for k, v in measured.items()}
        full = {str(m): v for m, v in parsed.items() if m.group != metrics.AA_SUBSET and m.kind != AUTOATTACK}
        subset = {str(replace(m, group="test")): v for m, v in parsed.items() if m.group == metrics.AA_SUBSET}
        found = masking_checks(full, evaluation.eps)
        return found + [f"{v} (AutoAttack images)" for v in masking_checks(subset, evaluation.autoattack.eps)]

    flags = {"teacher": checks(run.teacher_metrics)}
    flags.update({r.trial_id: checks(r.metrics) for r in run.records if r.status == "COMPLETE"})
    flagged = sorted(name for name, found in flags.items() if found)
    shown = f" ({', '.join(flagged)})" if flagged else ""
    run.echo(f"robustness sanity checks: {len(flagged)} of {len(flags)} models flagged{shown}")
    run.flags = flags

