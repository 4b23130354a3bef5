import numpy as np
import pytest
import torch

from rlmtl.data.dataset import MultiTaskData, TaskData
from rlmtl.data.sampler import FlatData, TaskBalancedSampler
from rlmtl.weighting import WEIGHTINGS, StepContext, make_weighting


def fake_data(counts=(5, 9, 3)):
    per_task = []
    for k, n in enumerate(counts):
        obs = np.stack([np.full(2, 100 * k + i, np.float32) for i in range(n)])
        per_task.append(TaskData({"state": obs}, np.full((n, 1), k, np.float32), {}, 1))
    return MultiTaskData(path=None, attrs={}, tasks=[str(k) for k in range(len(counts))], per_task=per_task)


def in_memory_sampler(data, keys, batch_per_task, seed, device, rank=0, world_size=1):
    return TaskBalancedSampler(FlatData.build(data, keys, device), batch_per_task, seed, device, rank, world_size)


def test_batches_are_task_balanced_and_come_from_their_task():
    sampler = in_memory_sampler(fake_data(), ["state"], 16, seed=0, device=torch.device("cpu"))
    batch = sampler.sample()
    assert batch["obs"]["state"].shape == (3, 16, 2) and batch["actions"].shape == (3, 16, 1)
    for k, n in enumerate((5, 9, 3)):
        values = batch["obs"]["state"][k, :, 0]
        assert torch.all(values >= 100 * k) and torch.all(values < 100 * k + n)
        assert torch.all(batch["actions"][k] == k)


def test_sampler_state_restores_the_stream():
    a = in_memory_sampler(fake_data(), ["state"], 8, seed=3, device=torch.device("cpu"))
    a.sample()
    state = a.state_dict()
    expected = [a.sample_indices() for _ in range(3)]
    b = in_memory_sampler(fake_data(), ["state"], 8, seed=99, device=torch.device("cpu"))
    b.load_state_dict(state)
    for indices in expected:
        torch.testing.assert_close(b.sample_indices(), indices)


def test_ranks_split_the_global_batch():
    full = in_memory_sampler(fake_data(), ["state"], 8, seed=1, device=torch.device("cpu")).sample_indices()
    parts = [
        in_memory_sampler(fake_data(), ["state"], 8, seed=1, device=torch.device("cpu"), rank=r, world_size=2).sample_indices()
        for r in range(2)
    ]
    torch.testing.assert_close(torch.cat(parts, dim=1), full)
    with pytest.raises(ValueError, match="divisible"):
        in_memory_sampler(fake_data(), ["state"], 7, seed=1, device=torch.device("cpu"), world_size=2)


def test_uniform_weighting_sums_losses_and_round_trips_state():
    assert "uniform" in WEIGHTINGS
    weighting = make_weighting("uniform", 3)
    losses = torch.tensor([1.0, 2.0, 4.0], requires_grad=True)
    context = StepContext(step=0, lr=0.1, shared_parameters=[])
    result = weighting.combine(losses, context)
    assert result.loss.item() == pytest.approx(7.0)
    torch.testing.assert_close(result.weights, torch.ones(3))
    clone = make_weighting("uniform", 3)
    clone.load_state_dict(weighting.state_dict())
    with pytest.raises(KeyError, match="unknown weighting"):
        make_weighting("nope", 3)
    with pytest.raises(TypeError, match="uniform"):
        make_weighting("uniform", 3, {"gamma": 1})
