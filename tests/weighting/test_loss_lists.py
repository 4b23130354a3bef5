"""The K losses given as a list: each task's gradient is taken through its own graph only, and the
step equals the one from the stacked tensor."""

from __future__ import annotations

import pytest
import torch

from rlmtl.weighting import MultiTaskBackward, engine, make_weighting

K = 3


class CountBackward(torch.autograd.Function):
    """Identity that counts how often autograd runs backward through it (per task)."""

    calls = [0] * K

    @staticmethod
    def forward(ctx, x, task):
        ctx.task = task
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        CountBackward.calls[ctx.task] += 1
        return grad, None


def model_and_batches():
    torch.manual_seed(0)
    trunk = torch.nn.Linear(6, 8)
    heads = torch.nn.ModuleList(torch.nn.Linear(8, 1) for _ in range(K))
    batches = [(torch.randn(5, 6), torch.randn(5, 1)) for _ in range(K)]
    return trunk, heads, batches


def task_losses(trunk, heads, batches):
    return [torch.nn.functional.mse_loss(head(CountBackward.apply(trunk(x), k)), y) for k, (head, (x, y)) in enumerate(zip(heads, batches))]


@pytest.mark.parametrize("method", ["pcgrad", "graddrop", "imtl_g"])
def test_a_list_takes_each_task_gradient_through_its_own_graph(method):
    grads = {}
    for form in ("list", "stacked"):
        trunk, heads, batches = model_and_batches()
        balance = MultiTaskBackward(make_weighting(method, K), trunk.parameters(), heads.parameters())
        CountBackward.calls = [0] * K
        engine._warned_stacked = False  # the warning comes once per process
        losses = task_losses(trunk, heads, batches)
        torch.manual_seed(1)  # GradDrop draws its mask
        with pytest.warns(UserWarning, match="stacked") if form == "stacked" else _no_warning():
            balance.backward(losses if form == "list" else torch.stack(losses))
        # the list: only the task's own gradient passes through its graph; stacked: every task's does
        assert CountBackward.calls == ([1] * K if form == "list" else [K] * K), CountBackward.calls
        grads[form] = [p.grad.clone() for p in [*trunk.parameters(), *heads.parameters()]]
    for a, b in zip(grads["list"], grads["stacked"]):
        torch.testing.assert_close(a, b)


class _no_warning:
    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        self._catch.__exit__(*exc)


def test_after_step_takes_a_list_too():
    trunk, heads, batches = model_and_batches()
    optimizer = torch.optim.SGD([*trunk.parameters(), *heads.parameters()], lr=0.1)
    balance = MultiTaskBackward(make_weighting("famo", K), trunk.parameters(), heads.parameters(), optimizer=optimizer)
    balance.backward(task_losses(trunk, heads, batches))
    optimizer.step()
    with torch.no_grad():
        balance.after_step(task_losses(trunk, heads, batches))
    assert balance.steps == 1 and torch.isfinite(balance.weighting.logits).all()
