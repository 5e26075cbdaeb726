"""Stage: AutoAttack (arXiv:2003.01690) on the teacher and the front members, after the sweep."""

from __future__ import annotations

from torch import nn

from kdtune import metrics
from kdtune.robustness import autoattack_metrics
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
    return autoattack_metrics(model, run.data.test, run.cfg.evaluation, n_classes=run.data.n_classes,
                              seed=run.cfg.seed)
