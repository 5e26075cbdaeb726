"""kdtune.compat.optim: torch's optimizers, stepped without importing torch._dynamo, update exactly as torch's do."""

from __future__ import annotations

import pytest
import torch

from kdtune.compat.optim import LeanAdam, LeanAdamW, LeanSGD, _lean, optimizers_without_dynamo
from tests.fresh_python import fresh_python


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))


def _train(opt_cls, steps: int = 6, **kw) -> tuple[list[torch.Tensor], dict]:
    model = _model()
    opt = opt_cls(model.parameters(), **kw)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(8, 6, generator=gen), torch.randint(0, 3, (8,), generator=gen)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()], opt.state_dict()


@pytest.mark.parametrize(("lean", "plain", "kw"), [
    (LeanAdam, torch.optim.Adam, {"lr": 1e-2, "weight_decay": 1e-3}),
    (LeanSGD, torch.optim.SGD, {"lr": 1e-1, "momentum": 0.9, "weight_decay": 1e-3}),
    (LeanAdamW, torch.optim.AdamW, {"lr": 1e-2, "betas": (0.8, 0.99), "weight_decay": 1e-2}),
    (LeanSGD, torch.optim.SGD, {"lr": 1e-1, "momentum": 0.8, "nesterov": True, "weight_decay": 1e-3}),
])
def test_lean_optimizers_update_exactly_as_torch(lean, plain, kw):
    assert issubclass(lean, plain) and lean is not plain
    got, got_state = _train(lean, **kw)
    want, want_state = _train(plain, **kw)
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)
    assert got_state["param_groups"] == want_state["param_groups"]
    for k, buffers in want_state["state"].items():
        for name, value in buffers.items():
            assert torch.equal(torch.as_tensor(got_state["state"][k][name]), torch.as_tensor(value)), name


def test_a_lean_optimizer_resumes_from_torchs_state_dict():
    """A checkpoint of torch's Adam continues identically in LeanAdam (and the lean step keeps grad mode)."""
    _, state = _train(torch.optim.Adam, steps=3, lr=1e-2)
    model = _model()
    opt = LeanAdam(model.parameters(), lr=1e-2)
    opt.load_state_dict(state)
    assert opt.state_dict()["state"][0]["step"] == 3
    with torch.enable_grad():
        model(torch.randn(2, 6)).sum().backward()
        opt.step()
        assert torch.is_grad_enabled()
    assert opt.state_dict()["state"][0]["step"] == 4


def test_an_optimizer_without_the_wrapper_is_left_as_it_is():
    class Plain(torch.optim.Optimizer):
        def step(self, closure=None):
            return None

    assert _lean(Plain) is Plain


def test_with_dynamo_loaded_torchs_wrappers_are_kept():
    import torch._dynamo  # noqa: F401  (as in any process that compiles)

    assert optimizers_without_dynamo() == []


@pytest.mark.slow  # a fresh interpreter: seconds of imports
def test_a_trial_trains_without_importing_dynamo():
    """What a Ray trial actor does: training with kdtune's optimizer never loads torch._dynamo (a second of
    CPU in every fresh trial process). Fails when a torch release changes how torch.optim imports it."""
    lines = fresh_python("""
        import sys
        from types import SimpleNamespace
        import torch
        from kdtune.compat.optim import optimizers_without_dynamo
        from kdtune.train import make_optimizer
        print(optimizers_without_dynamo())
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        from kdtune.config import TrainSpec
        from kdtune.recipe import make_scheduler
        for optimizer in ("adam", "sgd", "adamw"):
            spec = SimpleNamespace(lr=0.1, weight_decay=0.0, optimizer=optimizer)
            opt = make_optimizer(model.parameters(), spec)
            opt.zero_grad()
            model(torch.randn(4, 4)).sum().backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.load_state_dict(opt.state_dict())
        recipe = {"model": {"name": "mlp"}, "schedule": {"name": "multistep", "milestones": [1], "warmup_epochs": 1}}
        scheduler = make_scheduler(opt, TrainSpec.model_validate(recipe))
        opt.step()
        scheduler.step()
        scheduler.load_state_dict(scheduler.state_dict())
        print("torch._dynamo" in sys.modules)
    """)
    filled, dynamo_loaded = lines[-2:]
    assert filled == "['add_param_group', 'load_state_dict', 'state_dict', 'zero_grad']"
    assert dynamo_loaded == "False"
