"""Stage: AutoAttack (arXiv:2003.01690) on the teacher and the front members, after the sweep."""

from __future__ import annotations

import functools

from torch import nn

from kdtune import metrics
from kdtune.attacks import pgd
from kdtune.evaluate import correct, robust_accuracy, share
from kdtune.robustness import autoattack_accuracy
from kdtune.study._run import StudyRun


def attack(run: StudyRun) -> None:
    """Add ``test/autoattack_acc@<eps>`` to the teacher and the front members (or every complete trial), and
    clean and PGD accuracy on the same images (``test_autoattack_images/...``) to compare like with like.
    A trial attacked by an earlier run of the study is not attacked again."""
    spec = run.cfg.evaluation.autoattack
    if not spec.enabled or not spec.eps:
        return
    records = run.records
    on_front = run.front() if spec.members == "front" else [True] * len(records)
    done = metrics.attacked_acc("test", spec.eps[-1], "autoattack")
    chosen = [r.trial_id for r, f in zip(records, on_front)
              if f and r.trial_id in run.students and done not in r.metrics]
    run.echo(f"AutoAttack at eps {', '.join(map(str, spec.eps))} on the first {spec.n_samples} test images: "
             f"the teacher and {len(chosen)} trial(s)")
    run.add_metrics({trial_id: _attacked(run, run.students[trial_id]) for trial_id in chosen})
    run.teacher_metrics = {**run.teacher_metrics, **_attacked(run, run.teacher.model.cpu())}


def _attacked(run: StudyRun, model: nn.Module) -> dict[str, float]:
    spec, data = run.cfg.evaluation.autoattack, run.data
    head = data.test.head(spec.n_samples).to("cpu")
    x, y = head.x, head.y
    right = correct(model, x, y)
    out = {metrics.acc(metrics.AA_SUBSET): share(right)}
    for e in spec.eps:
        pgd_e = functools.partial(pgd, eps=e, steps=run.cfg.evaluation.pgd_steps)
        out[metrics.attacked_acc(metrics.AA_SUBSET, e)] = robust_accuracy(model, x, y, pgd_e, right=right)
        aa = autoattack_accuracy(model, x, y, eps=e, n_classes=data.n_classes, seed=run.cfg.seed)
        out[metrics.attacked_acc("test", e, "autoattack")] = aa
        out[metrics.attacked_acc(metrics.AA_SUBSET, e, "autoattack")] = aa
    return out
