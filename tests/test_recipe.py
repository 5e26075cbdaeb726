"""The training recipe: optimizer, lr schedule, label smoothing, gradient clipping, early stopping and
augmentation (kdtune.spec._recipe, kdtune.recipe, kdtune.augment, kdtune.train).

Every expectation is computed here by hand from the formula, not by the library that kdtune calls.
"""

from __future__ import annotations

import math
import re
import typing
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import kdtune.train
from kdtune import metrics
from kdtune.augment import augment_batch, check_images
from kdtune.config import TrainSpec, load_study, validate_study, with_overrides
from kdtune.errors import ConfigError
from kdtune.losses import cross_entropy, hinton_kd
from kdtune.methods import MethodContext, build_method
from kdtune.models import build_model
from kdtune.recipe import EarlyStopping, make_scheduler
from kdtune.spec import EarlyStoppingSpec
from kdtune.train import FitState, fit, fit_teacher, make_optimizer
from tests.studies import base_study

REPO = Path(__file__).resolve().parent.parent
LR, EPOCHS = 0.1, 10


def spec(**kw) -> TrainSpec:
    base = {"model": {"name": "mlp", "hidden": [8]}, "epochs": 3, "batch_size": 128, "lr": 3.0e-3}
    return TrainSpec.model_validate({**base, **kw})


def deterministic(history):
    return [{k: v for k, v in h.items() if not k.startswith("time/")} for h in history]


# ---------------------------------------------------------------- schedules: lr of each epoch by hand


def anneal(start: float, end: float, t: float) -> float:
    """Cosine annealing from ``start`` (t = 0) to ``end`` (t = 1)."""
    return end + (start - end) * (1 + math.cos(math.pi * t)) / 2


def onecycle(e: int, *, peak: float = LR, pct: float = 0.3, div: float = 25.0, final: float = 1.0e4) -> float:
    """Smith & Topin's one cycle over EPOCHS steps: up from peak/div to the peak at step pct·E - 1, then down."""
    start, up = peak / div, pct * EPOCHS - 1
    if e <= up:
        return anneal(start, peak, e / up)
    return anneal(peak, start / final, (e - up) / (EPOCHS - 1 - up))


def warm(e: int, w: int, after) -> float:
    """Linear warm-up lr·(e+1)/(w+1) for e < w, then the schedule ``after`` on its own clock k = e - w."""
    return LR * (e + 1) / (w + 1) if e < w else after(e - w)


SCHEDULES = {
    "constant": ({"name": "constant"}, lambda e: LR),
    "constant_warmup": ({"name": "constant", "warmup_epochs": 3}, lambda e: warm(e, 3, lambda k: LR)),
    "step": ({"name": "step", "step_size": 3, "gamma": 0.5}, lambda e: LR * 0.5 ** (e // 3)),
    "step_warmup": ({"name": "step", "step_size": 3, "gamma": 0.5, "warmup_epochs": 2},
                    lambda e: warm(e, 2, lambda k: LR * 0.5 ** (k // 3))),
    "multistep": ({"name": "multistep", "milestones": [3, 6, 8], "gamma": 0.2},
                  lambda e: LR * 0.2 ** sum(m <= e for m in (3, 6, 8))),
    "multistep_warmup": ({"name": "multistep", "milestones": [2, 5], "gamma": 0.2, "warmup_epochs": 2},
                         lambda e: warm(e, 2, lambda k: LR * 0.2 ** sum(m <= k for m in (2, 5)))),
    "exponential": ({"name": "exponential", "gamma": 0.9}, lambda e: LR * 0.9**e),
    "exponential_warmup": ({"name": "exponential", "gamma": 0.9, "warmup_epochs": 1},
                           lambda e: warm(e, 1, lambda k: LR * 0.9**k)),
    "cosine": ({"name": "cosine", "min_lr": 0.01}, lambda e: anneal(LR, 0.01, e / EPOCHS)),
    "cosine_warmup": ({"name": "cosine", "min_lr": 0.01, "warmup_epochs": 4},
                      lambda e: warm(e, 4, lambda k: anneal(LR, 0.01, k / (EPOCHS - 4)))),
    "onecycle": ({"name": "onecycle"}, onecycle),
    "onecycle_params": ({"name": "onecycle", "max_lr": 0.5, "pct_start": 0.45, "div_factor": 10.0,
                         "final_div_factor": 100.0, "warmup_epochs": 3},  # warm-up: its own (W ignored)
                        lambda e: onecycle(e, peak=0.5, pct=0.45, div=10.0, final=100.0)),
}


def scheduled_lrs(schedule: dict, optimizer: str = "sgd") -> list[float]:
    """The lr each of EPOCHS epochs trains with, stepping as ``fit`` does (once after every epoch)."""
    s = spec(epochs=EPOCHS, lr=LR, optimizer=optimizer, schedule=schedule)
    opt = make_optimizer([torch.nn.Parameter(torch.zeros(1))], s)
    scheduler = make_scheduler(opt, s)
    lrs = []
    for _ in range(EPOCHS):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        if scheduler is not None:
            scheduler.step()
    return lrs


@pytest.mark.parametrize("case", SCHEDULES)
def test_each_schedule_sets_the_lr_of_each_epoch_by_its_formula(case):
    schedule, formula = SCHEDULES[case]
    expected = [formula(e) for e in range(EPOCHS)]
    assert scheduled_lrs(schedule) == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert scheduled_lrs(schedule, optimizer="adamw") == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_the_default_constant_schedule_never_touches_the_optimizer():
    s = spec()
    opt = make_optimizer([torch.nn.Parameter(torch.zeros(1))], s)
    assert make_scheduler(opt, s) is None and "initial_lr" not in opt.param_groups[0]


def test_fit_trains_each_epoch_at_the_scheduled_lr_and_reports_it(small_data):
    schedule, formula = SCHEDULES["multistep_warmup"]
    model = build_model("mlp", {"hidden": [8]}, small_data.info)
    history = fit_teacher(model, small_data, spec(epochs=EPOCHS, lr=LR, optimizer="sgd", schedule=schedule), seed=0)
    assert [h["train/lr"] for h in history] == pytest.approx([formula(e) for e in range(EPOCHS)], rel=1e-9)


# ---------------------------------------------------------------- optimizers


@pytest.mark.parametrize(("optimizer", "cls", "expected"), [
    ("sgd", torch.optim.SGD, {"momentum": 0.9, "nesterov": False}),  # kdtune's sgd as it always was
    ("adam", torch.optim.Adam, {"betas": (0.9, 0.999), "decoupled_weight_decay": False}),
    ({"name": "sgd", "momentum": 0.8, "nesterov": True}, torch.optim.SGD, {"momentum": 0.8, "nesterov": True}),
    ({"name": "adam", "betas": [0.8, 0.99]}, torch.optim.Adam,
     {"betas": (0.8, 0.99), "decoupled_weight_decay": False}),
    ({"name": "adamw", "betas": [0.85, 0.98]}, torch.optim.AdamW,
     {"betas": (0.85, 0.98), "decoupled_weight_decay": True}),
    ({"name": "adam", "momentum": 0.5}, torch.optim.Adam, {"betas": (0.9, 0.999)}),  # momentum: SGD's, unused
])  # fmt: skip
def test_an_optimizer_mapping_builds_that_torch_optimizer_with_its_hyperparameters(optimizer, cls, expected):
    opt = make_optimizer([torch.nn.Parameter(torch.zeros(2))], spec(lr=0.05, weight_decay=1.0e-3, optimizer=optimizer))
    assert type(opt).__mro__[1] is cls  # the Lean subclass of exactly that optimizer
    group = opt.param_groups[0]
    assert group["lr"] == 0.05 and group["weight_decay"] == 1.0e-3
    assert {k: group[k] for k in expected} == expected


def test_nesterov_without_momentum_fails_at_load_with_one_line():
    with pytest.raises(ConfigError, match=r"^x: student\.optimizer: nesterov needs momentum > 0; .*$"):
        validate_study(base_study(student={"model": {"name": "mlp"}, "optimizer": {
            "name": "sgd", "momentum": 0.0, "nesterov": True}}), source="x")


# ---------------------------------------------------------------- label smoothing


def smoothed_ce(logits: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Szegedy et al.: CE against q = (1-eps)·onehot(y) + eps/K."""
    logp = logits.log_softmax(1)  # (B, K)
    q = torch.full_like(logp, eps / logits.shape[1])
    q[torch.arange(len(y)), y] += 1 - eps
    return -(q * logp).sum(1).mean()


def test_label_smoothing_changes_the_cross_entropy_exactly_as_the_formula_says():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(16, 10, generator=g), torch.randn(16, 10, generator=g)  # (B, K) each
    y = torch.randint(0, 10, (16,), generator=g)
    assert cross_entropy(s, None, y, label_smoothing=0.2) == pytest.approx(float(smoothed_ce(s, y, 0.2)), rel=1e-6)
    uniform = -s.log_softmax(1).mean(1).mean()  # CE against the uniform distribution
    assert float(smoothed_ce(s, y, 0.2)) == pytest.approx(float(0.8 * F.cross_entropy(s, y) + 0.2 * uniform), rel=1e-6)
    soft = hinton_kd(s, t, y, temperature=2.0, alpha=1.0)
    mixed = hinton_kd(s, t, y, temperature=2.0, alpha=0.3, label_smoothing=0.2)
    assert float(mixed) == pytest.approx(float(0.3 * soft + 0.7 * smoothed_ce(s, y, 0.2)), rel=1e-6)


@pytest.mark.parametrize("method", ["ce", "hinton"])
def test_a_methods_hard_label_term_uses_the_students_label_smoothing(small_data, method):
    g = torch.Generator().manual_seed(1)
    logits, t = torch.randn(8, 10, generator=g), torch.randn(len(small_data.train), 10, generator=g)
    y, idx = small_data.train.y[:8], torch.arange(8)
    terms = {}
    for eps in (0.0, 0.1):
        ctx = MethodContext(small_data, None, t, spec(label_smoothing=eps), 0, Path("unused-cache"))
        terms[eps] = float(build_method(method, {"alpha": 0.5} if method == "hinton" else {}, ctx)
                           .terms(logits, small_data.train.x[:8], y, idx)["task"])  # fmt: skip
    share = 0.5 if method == "hinton" else 1.0  # the CE's weight in the method's loss
    change = share * float(smoothed_ce(logits, y, 0.1) - smoothed_ce(logits, y, 0.0))
    assert terms[0.1] - terms[0.0] == pytest.approx(change, rel=1e-5)


def test_the_teachers_cross_entropy_is_label_smoothed(small_data):
    torch.manual_seed(0)
    model = build_model("mlp", {"hidden": [8]}, small_data.info)
    with torch.no_grad():
        expected = float(smoothed_ce(model(small_data.train.x), small_data.train.y, 0.3))
    n = len(small_data.train)  # one batch: the epoch's loss is that of the initial weights
    history = fit_teacher(model, small_data, spec(epochs=1, batch_size=n, label_smoothing=0.3), seed=0)
    assert history[0]["train/loss"] == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------- gradient clipping


def global_grad_norms(monkeypatch) -> list[float]:
    """The global L2 norm of the gradients at every optimizer step of the next fits."""
    norms, make = [], kdtune.train.make_optimizer

    def spy(params, train_spec):
        opt = make(params, train_spec)
        step = opt.step

        def recorded(*args, **kwargs):
            grads = [p.grad.flatten() for group in opt.param_groups for p in group["params"] if p.grad is not None]
            norms.append(float(torch.linalg.vector_norm(torch.cat(grads))))
            return step(*args, **kwargs)

        opt.step = recorded
        return opt

    monkeypatch.setattr(kdtune.train, "make_optimizer", spy)
    return norms


@pytest.mark.parametrize("clip", [None, 0.05])
def test_grad_clip_bounds_the_global_gradient_norm(small_data, monkeypatch, clip):
    norms = global_grad_norms(monkeypatch)
    model = build_model("mlp", {"hidden": [8]}, small_data.info)
    fit_teacher(model, small_data, spec(epochs=1, batch_size=32, grad_clip=clip), seed=0)
    if clip is None:
        assert max(norms) > 0.5  # without clipping the bound would be broken
    else:
        assert max(norms) <= clip * (1 + 1e-5)
        assert max(norms) == pytest.approx(clip, rel=1e-3)  # scaled down to the bound, not below it


# ---------------------------------------------------------------- early stopping


VAL_ACC = [0.5, 0.7, 0.6, 0.7, 0.65, 0.9, 0.95, 0.96, 0.97, 0.98]  # best 0.7 at epoch 2; a tie is no gain


def scripted_val_acc(monkeypatch, values=VAL_ACC) -> None:
    it = iter(values)
    monkeypatch.setattr(kdtune.train, "accuracy", lambda model, split: next(it))


def test_early_stopping_stops_after_patience_epochs_and_restores_the_best_weights(small_data, monkeypatch):
    scripted_val_acc(monkeypatch)
    states = []
    model = build_model("mlp", {"hidden": [8]}, small_data.info)
    history = fit_teacher(model, small_data, spec(epochs=10, early_stopping={"patience": 3}), seed=0,
                          on_state=states.append)
    assert [h["val/acc"] for h in history] == VAL_ACC[:5]  # epochs 3, 4, 5 did not beat epoch 2
    assert [s.epoch for s in states] == [1, 2, 3, 4, 5] and states[-1].best["epoch"] == 2
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, states[1].model[name], rtol=0, atol=0, msg=name)
    assert any(not torch.equal(states[1].model[k], states[-1].model[k]) for k in states[1].model)


def test_early_stopping_resumes_to_the_same_end(small_data, monkeypatch, tmp_path):
    train_spec = spec(epochs=10, early_stopping={"patience": 3})
    scripted_val_acc(monkeypatch)
    torch.manual_seed(0)
    full = build_model("mlp", {"hidden": [8]}, small_data.info)
    full_history = fit_teacher(full, small_data, train_spec, seed=0)

    def crash_after_epoch_3(state: FitState) -> None:
        if state.epoch == 3:
            state.save(tmp_path / "state.pt")
            raise KeyboardInterrupt

    scripted_val_acc(monkeypatch)
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        fit_teacher(build_model("mlp", {"hidden": [8]}, small_data.info), small_data, train_spec, seed=0,
                    on_state=crash_after_epoch_3)
    scripted_val_acc(monkeypatch, VAL_ACC[3:])
    torch.manual_seed(0)
    resumed = build_model("mlp", {"hidden": [8]}, small_data.info)
    history = fit_teacher(resumed, small_data, train_spec, seed=0, resume=FitState.load(tmp_path / "state.pt"))
    assert deterministic(history) == deterministic(full_history) and len(history) == 5
    for (name, p), q in zip(resumed.state_dict().items(), full.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)


def test_early_stopping_on_a_loss_waits_for_it_to_fall():
    stopper, model = EarlyStopping(EarlyStoppingSpec(metric="train/loss", mode="min", patience=2, min_delta=0.01)), None
    seen = []
    for loss in (1.0, 0.8, 0.795, 0.79, 0.5):  # 0.795 and 0.79 are within min_delta of 0.8
        stopper.update({"train/loss": loss}, torch.nn.Linear(1, 1), model)
        seen.append(stopper.stopped)
    assert seen == [False, False, False, True, False] and stopper.epoch == 5


def test_early_stopping_reads_kdtunes_own_metric_names():
    allowed = typing.get_args(EarlyStoppingSpec.model_fields["metric"].annotation)
    assert metrics.acc("val") in allowed and "train/loss" in allowed
    with pytest.raises(ConfigError, match=r"^x: student\.early_stopping: val/acc is maximised; set mode: max$"):
        validate_study(base_study(student={"model": {"name": "mlp"}, "early_stopping": {"mode": "min"}}), source="x")


# ---------------------------------------------------------------- augmentation


def test_augmentation_keeps_shapes_and_the_pixel_range_and_changes_images(small_data):
    x = small_data.train.x[:64]
    out = augment_batch(x, crop_padding=4, hflip=True, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert x.min() >= 0 and x.max() <= 1 and out.min() >= 0 and out.max() <= 1
    changed = (out != x).flatten(1).any(1)  # (B,)
    assert changed.sum() > 48
    again = augment_batch(x, crop_padding=4, hflip=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)  # the generator decides everything


def test_a_flip_mirrors_whole_images_and_a_crop_is_a_shifted_window_of_the_padded_image(small_data):
    x, p = small_data.train.x[:16], 3
    flipped = augment_batch(x, crop_padding=0, hflip=True, generator=torch.Generator().manual_seed(0))
    same = [torch.equal(a, b) for a, b in zip(flipped, x)]
    mirrored = [torch.equal(a, b.flip(-1)) for a, b in zip(flipped, x)]
    assert all(s or m for s, m in zip(same, mirrored)) and any(mirrored) and not all(mirrored)
    cropped = augment_batch(x, crop_padding=p, hflip=False, generator=torch.Generator().manual_seed(0))
    padded = F.pad(x, (p, p, p, p))  # (B, C, H + 2p, W + 2p)
    h, w = x.shape[-2:]
    for a, b in zip(cropped, padded):
        windows = [b[:, dy:dy + h, dx:dx + w] for dy in range(2 * p + 1) for dx in range(2 * p + 1)]
        assert any(torch.equal(a, win) for win in windows)


def test_fit_augments_the_images_of_each_batch_and_leaves_the_labels(small_data):
    seen = []

    def step(x, y, idx):
        seen.append((x.detach().clone(), y.clone(), idx.clone()))
        return {"loss": F.cross_entropy(model(x), y)}

    model = build_model("mlp", {"hidden": [8]}, small_data.info)
    fit(model, small_data, spec(epochs=1, augment={"crop_padding": 2, "hflip": False}), step, seed=0)
    assert all(torch.equal(y, small_data.train.y[idx]) for _, y, idx in seen)
    assert all(x.shape == small_data.train.x[idx].shape for x, _, idx in seen)
    assert any(not torch.equal(x, small_data.train.x[idx]) for x, _, idx in seen)


def test_augmenting_data_that_are_not_images_fails_with_one_line():
    with pytest.raises(ConfigError, match=r"^augment: needs images \(C, H, W\), .* \(784, 1, 1\); remove augment"):
        check_images((784, 1, 1))
    check_images((3, 32, 32))  # images pass


def test_an_augmenting_student_is_taught_on_the_same_augmented_view(small_data, small_teacher, small_teacher_logits):
    idx = torch.arange(16)
    x = augment_batch(small_data.train.x[idx], crop_padding=4, hflip=False, generator=torch.Generator().manual_seed(0))
    y, logits = small_data.train.y[idx], torch.randn(16, 10)
    with torch.no_grad():
        on_view = small_teacher(x)  # the teacher's logits on the view the student sees
    assert not torch.allclose(on_view, small_teacher_logits[idx], atol=1e-3)  # the crop changed them
    for recipe, expected in ((spec(augment={"crop_padding": 4}), on_view), (spec(), small_teacher_logits[idx])):
        ctx = MethodContext(small_data, small_teacher, small_teacher_logits, recipe, 0, Path("unused-cache"))
        d = build_method("hinton", {"temperature": 2.0, "alpha": 0.5}, ctx)
        d.begin_batch(x, idx)
        x_adv = x + 0.05 * torch.randn_like(x)  # what an attacked student sees: the targets ignore it
        task = d.terms(logits, x_adv, y, idx)["task"]
        torch.testing.assert_close(task, hinton_kd(logits, expected, y, temperature=2.0, alpha=0.5))


# ---------------------------------------------------------------- resuming with a recipe


@pytest.mark.parametrize("schedule", [
    {"name": "multistep", "milestones": [1, 2], "gamma": 0.5, "warmup_epochs": 1},
    {"name": "cosine", "min_lr": 1.0e-3},
    {"name": "onecycle", "pct_start": 0.5},
])  # fmt: skip
def test_a_resumed_fit_with_a_schedule_ends_bit_identical_to_an_uninterrupted_one(small_data, tmp_path, schedule):
    train_spec = spec(
        epochs=4, lr=0.05, optimizer={"name": "sgd", "nesterov": True}, schedule=schedule, grad_clip=1.0,
        label_smoothing=0.1, augment={"crop_padding": 2, "hflip": False}, early_stopping={"patience": 10},
    )  # fmt: skip

    def run(**kw):
        torch.manual_seed(0)
        model = build_model("mlp", {"hidden": [8]}, small_data.info)
        return model, fit_teacher(model, small_data, train_spec, seed=0, **kw)

    full, full_history = run()

    def crash_after_epoch_2(state: FitState) -> None:
        if state.epoch == 2:
            state.save(tmp_path / "state.pt")
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(on_state=crash_after_epoch_2)
    state = FitState.load(tmp_path / "state.pt")  # weights_only=True
    assert state.scheduler and state.best["epoch"] <= 2
    resumed, history = run(resume=state)
    assert deterministic(history) == deterministic(full_history)
    assert len({h["train/lr"] for h in history}) > 1  # the schedule did move the lr
    for (name, p), q in zip(resumed.state_dict().items(), full.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)


def test_resuming_a_scheduled_fit_from_a_state_without_a_schedule_fails(small_data):
    states = []
    model = build_model("mlp", {"hidden": [8]}, small_data.info)
    fit_teacher(model, small_data, spec(epochs=1), seed=0, on_state=states.append)
    with pytest.raises(ValueError, match="no lr schedule"):
        fit_teacher(model, small_data, spec(epochs=2, schedule={"name": "cosine"}), seed=0, resume=states[0])


# ---------------------------------------------------------------- every field searchable


def test_recipe_fields_are_searchable_by_their_yaml_paths():
    student = {"model": {"name": "mlp"}, "optimizer": "sgd", "schedule": {"name": "multistep", "milestones": [2, 5]}}
    cfg = validate_study(base_study(student=student), source="x")
    got = with_overrides(cfg, {
        "student.optimizer.momentum": 0.5, "student.optimizer.nesterov": True, "student.schedule.warmup_epochs": 1,
        "student.schedule.milestones.0": 4, "student.schedule.gamma": 0.3, "student.label_smoothing": 0.1,
        "student.grad_clip": 2.0, "student.early_stopping.patience": 4, "student.augment.hflip": False,
        "teacher.optimizer.betas.1": 0.99,
    })  # fmt: skip
    s = got.student
    assert (s.optimizer.name, s.optimizer.momentum, s.optimizer.nesterov) == ("sgd", 0.5, True)
    assert (s.schedule.milestones, s.schedule.warmup_epochs, s.schedule.gamma) == ([4, 5], 1, 0.3)
    assert (s.label_smoothing, s.grad_clip) == (0.1, 2.0)
    assert s.early_stopping.patience == 4 and s.early_stopping.metric == "val/acc"  # a searched field turns it on
    assert s.augment.hflip is False and s.augment.crop_padding == 4
    assert got.teacher.optimizer.betas == (0.9, 0.99)


def test_the_schedule_name_is_searchable_over_schedules_that_need_other_fields():
    cfg = validate_study(base_study(student={"model": {"name": "mlp"}, "schedule": {
        "name": "multistep", "milestones": [3, 6], "gamma": 0.2}}), source="x")
    assert with_overrides(cfg, {"student.schedule.name": "cosine"}).student.schedule.name == "cosine"
    assert with_overrides(cfg, {"student.optimizer.name": "adamw"}).student.optimizer.name == "adamw"
    assert with_overrides(cfg, {"student.optimizer": "sgd"}).student.optimizer.momentum == 0.9  # a bare name
    # a schedule that needs a field the study does not give is refused at load
    no_milestones = validate_study(base_study(), source="x")
    with pytest.raises(ConfigError, match=r"student\.schedule: multistep needs milestones"):
        with_overrides(no_milestones, {"student.schedule.name": "multistep"})


# ---------------------------------------------------------------- seed 004's study files


SEED004 = ["seed004_teacher_free.yaml", "seed004_robust_teacher.yaml"]
FULL = re.compile(r"^( *[a-z_]+: ).*# full: (.*)$", re.MULTILINE)  # the files' own sed command, in Python


@pytest.mark.parametrize("name", SEED004)
def test_seed004_studies_carry_the_sources_recipes_and_their_full_length_version_validates(name, tmp_path):
    path = REPO / "studies" / name
    cfg = load_study(path)
    assert cfg.student.optimizer.name == "sgd" and cfg.student.optimizer.momentum == 0.9
    text = path.read_text(encoding="utf-8")
    assert "sed -E 's/^( *[a-z_]+: ).*# full: (.*)$/\\1\\2/'" in text
    full = load_study(_write(tmp_path / name, FULL.sub(r"\1\2", text)))
    assert full.name == cfg.name + "_full" and full.search == cfg.search
    if name == "seed004_teacher_free.yaml":
        assert (full.student.epochs, full.student.lr, full.student.weight_decay) == (200, 0.1, 5.0e-4)
        assert (full.student.schedule.name, full.student.schedule.milestones) == ("multistep", [60, 120, 160])
        assert full.student.schedule.gamma == 0.2 and full.teacher.epochs == 50
        assert (full.teacher.lr, full.teacher.schedule.gamma, full.teacher.weight_decay) == (1.0e-2, 0.95, 1.0e-5)
    else:
        for part in (full.teacher, full.student):
            assert (part.epochs, part.lr, part.schedule.name, part.schedule.gamma) == (50, 0.1, "exponential", 0.9)
            assert part.early_stopping is not None


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
