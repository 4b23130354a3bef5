import numpy as np
import pytest
import torch

from rlmtl.agents import ENCODERS, MultiTaskBC
from rlmtl.agents.encoders import random_shift
from rlmtl.agents.heads import TaskHeads
from rlmtl.config import AgentConfig


@pytest.mark.parametrize("hidden", [0, 16])
def test_batched_heads_equal_a_loop_over_tasks(hidden):
    torch.manual_seed(0)
    heads = TaskHeads(num_tasks=5, in_dim=8, out_dim=3, hidden_dim=hidden)
    features = torch.randn(5, 7, 8)
    batched = heads.forward_all(features)
    for k in range(5):
        x = features[k]
        for layer, (w, b) in enumerate(zip(heads.weights, heads.biases)):
            x = x @ w[k] + b[k]
            if layer < len(heads.weights) - 1:
                x = torch.relu(x)
        torch.testing.assert_close(batched[k], x)
    ids = torch.arange(5).repeat_interleave(7)
    flat = features.reshape(35, 8)
    torch.testing.assert_close(heads.selected(ids, flat)(None).reshape(5, 7, 3), batched)
    # the features' columns fixed, the rest given per call (a denoiser's noisy action and step)
    run = heads.selected(ids, flat[:, :5])
    for rest in (flat[:, 5:], -flat[:, 5:]):
        full = torch.cat([flat[:, :5], rest], dim=1).reshape(5, 7, 8)
        torch.testing.assert_close(run(rest).reshape(5, 7, 3), heads.forward_all(full))


def test_encoder_registry():
    assert {"mlp", "cnn"} <= set(ENCODERS.names())
    encoder = ENCODERS.get("cnn")(32, [8, 8], 20)
    assert encoder(torch.rand(2, 3, 32, 32)).shape == (2, 20)


def stats(dim, action_low, action_high, mean=0.0, std=1.0):
    return {
        "state": {"mean": np.full(dim, mean, np.float32), "std": np.full(dim, std, np.float32), "min": None, "max": None},
        "actions": {"min": np.asarray(action_low, np.float32), "max": np.asarray(action_high, np.float32)},
    }


def test_normalisation_and_act_bounds():
    torch.manual_seed(0)
    agent = MultiTaskBC({"state": (6,)}, 2, 3, 64, AgentConfig(hidden_dim=16))
    agent.set_statistics([stats(6, [-1, -1], [1, 1]), stats(6, [0, 2], [2, 2], mean=5.0, std=2.0), stats(6, [-3, 0], [3, 4])])
    torch.testing.assert_close(agent.action_scale[1], torch.tensor([1.0, 1.0]))  # constant dim keeps scale 1
    torch.testing.assert_close(agent.action_center[2], torch.tensor([0.0, 2.0]))
    actions = torch.tensor([[[1.0, 1.0]], [[2.0, 2.0]], [[3.0, 4.0]]])
    torch.testing.assert_close(agent.normalize_actions(actions), torch.tensor([[[1.0, 1.0]], [[1.0, 0.0]], [[1.0, 1.0]]]))
    agent.eval()
    for task, (low, high) in enumerate([([-1, -1], [1, 1]), ([0, 1], [2, 3]), ([-3, 0], [3, 4])]):
        action = agent.act({"state": np.random.randn(6).astype(np.float32) * 50}, task)
        assert action.shape == (2,) and np.all(action >= np.array(low) - 1e-5) and np.all(action <= np.array(high) + 1e-5)


def test_task_losses_are_per_task_and_reach_every_parameter():
    torch.manual_seed(0)
    agent = MultiTaskBC({"state": (6,)}, 2, 4, 64, AgentConfig(hidden_dim=16))
    batch = {"obs": {"state": torch.randn(4, 5, 6)}, "actions": torch.rand(4, 5, 2) * 2 - 1}
    losses = agent.task_losses(batch)
    assert losses.shape == (4,)
    # task k's loss depends only on head k (and the shared encoder)
    grads = torch.autograd.grad(losses[1], agent.heads.weights[0], retain_graph=True)[0]
    assert grads[1].abs().sum() > 0 and grads[[0, 2, 3]].abs().sum() == 0
    losses.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.parameters())
    assert {id(p) for p in agent.shared_parameters()}.isdisjoint({id(p) for p in agent.task_specific_parameters()})
    assert len(agent.shared_parameters()) + len(agent.task_specific_parameters()) == len(list(agent.parameters()))


def test_image_agent_fuses_proprio_and_camera():
    torch.manual_seed(0)
    agent = MultiTaskBC({"proprio": (4,), "rgb_cam": (32, 32, 3)}, 4, 2, 32, AgentConfig(hidden_dim=32, image_channels=[8, 8]))
    batch = {
        "obs": {"proprio": torch.randn(2, 3, 4), "rgb_cam": torch.randint(0, 256, (2, 3, 32, 32, 3), dtype=torch.uint8)},
        "actions": torch.zeros(2, 3, 4),
    }
    losses = agent.task_losses(batch)
    losses.sum().backward()
    assert agent.encoder.image_encoders["rgb_cam"].conv[0].weight.grad.abs().sum() > 0
    agent.eval()
    action = agent.act({"proprio": np.zeros(4, np.float32), "rgb_cam": np.zeros((32, 32, 3), np.uint8)}, 1)
    assert action.shape == (4,)


def test_random_shift_moves_content_by_whole_pixels():
    torch.manual_seed(0)
    images = torch.rand(6, 3, 16, 16)
    shifted = random_shift(images, pad=2)
    assert shifted.shape == images.shape
    for i in range(6):  # every output is the padded input cropped at an integer offset
        padded = torch.nn.functional.pad(images[i : i + 1], (2, 2, 2, 2), mode="replicate")[0]
        assert any(torch.allclose(shifted[i], padded[:, y : y + 16, x : x + 16], atol=1e-5) for y in range(5) for x in range(5))


def test_vmap_friendly_group_norm_equals_torch():
    from rlmtl.agents.encoders import GroupNorm

    torch.manual_seed(0)
    ours, reference = GroupNorm(4, 16), torch.nn.GroupNorm(4, 16)
    torch.nn.init.normal_(ours.weight)
    torch.nn.init.normal_(ours.bias)
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(3, 16, 5, 5)
    torch.testing.assert_close(ours(x), reference(x), rtol=1e-5, atol=1e-5)
