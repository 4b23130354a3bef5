"""TAG's affinity probe on a synthetic problem with planted task families."""

import torch
from torch import nn
from torch.func import functional_call

from rlmtl.tag.grouping import search_groupings
from rlmtl.tag.probe import AffinityProbe
from rlmtl.weighting.lookahead import virtual_step

K, DIM = 6, 8


class TwoFamilies(nn.Module):
    """A shared linear map and per-task scalar heads; tasks 0-2 regress onto +w, tasks 3-5 onto -w,
    so a step on one family's gradient helps its own family and hurts the other."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Linear(DIM, 1, bias=False)
        self.scales = nn.Parameter(torch.ones(K))

    def forward(self, batch):
        x, y = batch  # [K, B, DIM], [K, B]
        prediction = self.shared(x).squeeze(-1) * self.scales[:, None]
        return ((prediction - y) ** 2).mean(dim=1)  # [K]


def planted_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    direction = torch.randn(DIM, generator=g)
    x = torch.randn(K, 64, DIM, generator=g)
    sign = torch.tensor([1.0] * 3 + [-1.0] * 3)
    return x, sign[:, None] * (x @ direction)


def per_task_grads(model, batch):
    losses = model(batch)
    rows = [torch.autograd.grad(losses[i], model.shared.weight, retain_graph=True)[0] for i in range(K)]
    return losses.detach(), {"shared.weight": torch.stack(rows)}


def test_probe_finds_the_planted_families_and_their_groups():
    torch.manual_seed(0)
    model = TwoFamilies()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    probe = AffinityProbe(K)
    named = dict(model.named_parameters())
    for step in range(5):
        batch = planted_batch(step)
        losses, grads = per_task_grads(model, batch)
        probe.probe(losses, grads, named, optimizer, lambda p, b: functional_call(model, p, (b,)), batch)
        optimizer.zero_grad()
        model(batch).sum().backward()
        optimizer.step()
    z = probe.affinity()
    family = torch.tensor([0, 0, 0, 1, 1, 1])
    same = family[:, None] == family[None, :]
    assert (z[same] > 0).all() and (z[~same] < 0).all()
    best = search_groupings(z.numpy(), max_groups=2)[2][0]
    assert best.groups == ((0, 1, 2), (3, 4, 5))


def test_probe_matches_a_hand_computed_lookahead_and_leaves_the_model_alone():
    torch.manual_seed(1)
    model = TwoFamilies()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    batch = planted_batch(3)
    optimizer.zero_grad()
    model(batch).sum().backward()
    optimizer.step()  # some Adam state
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses, grads = per_task_grads(model, batch)
    z = AffinityProbe(K).probe(
        losses, grads, dict(model.named_parameters()), optimizer, lambda p, b: functional_call(model, p, (b,)), batch
    )
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), before[n])
    i = 4
    stepped = virtual_step(optimizer, {"shared.weight": model.shared.weight}, {"shared.weight": grads["shared.weight"][i]})
    after = functional_call(model, {"shared.weight": stepped["shared.weight"], "scales": model.scales}, (batch,))
    torch.testing.assert_close(z[i], 1 - after.detach() / losses)
