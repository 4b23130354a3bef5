"""Action heads (agents/action_heads.py): each head's loss and decoding against an independent
formulation, the chunk targets and ACT's temporal ensemble, every weighting method with every head,
and the config-time errors of a head that does not fit its suite."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from synthetic_runs import write_config, write_tiny_dataset
from toy_mtl import agent_batch, small_agent, train_agent

from rlmtl.agents.action_heads import ACTION_HEADS, bins_to_quaternion, make_action_head, quaternion_to_bins
from rlmtl.agents.rotation_bins import bins_to_quaternion as numpy_bins_to_quaternion
from rlmtl.agents.rotation_bins import quaternion_to_bins as numpy_quaternion_to_bins
from rlmtl.build import check_head_fits_suite
from rlmtl.config import load_config
from rlmtl.data.sampler import FlatData, _demo_ends
from rlmtl.envs import make_suite
from rlmtl.errors import ConfigError
from rlmtl.evaluation.temporal_ensemble import TemporalEnsemble
from rlmtl.weighting import WEIGHTINGS, make_weighting


def random_quaternions(n: int, seed: int = 0) -> np.ndarray:
    q = np.random.default_rng(seed).normal(size=(n, 4))
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def test_keyframe_bins_in_torch_equal_the_numpy_convention_and_round_trip_within_the_resolution():
    q = random_quaternions(2000)
    bins = quaternion_to_bins(torch.as_tensor(q)).numpy()
    np.testing.assert_array_equal(bins, numpy_quaternion_to_bins(q))
    back = bins_to_quaternion(torch.as_tensor(bins)).numpy()
    np.testing.assert_allclose(back, numpy_bins_to_quaternion(bins), atol=1e-12)
    assert (back[:, 3] >= 0).all()  # canonical sign
    # the angle between q and its binned rotation: at most 3 half-bins (each Euler angle within 2.5 degrees)
    angle = np.degrees(2 * np.arccos(np.clip(np.abs((back * q).sum(1)), 0, 1)))
    assert angle.max() <= 3 * 2.5 + 1e-6
    # q and -q are the same rotation: the same bins
    np.testing.assert_array_equal(quaternion_to_bins(torch.as_tensor(-q)).numpy(), bins)


def test_gmm_loss_is_the_negative_log_likelihood_of_robomimics_mixture():
    head = make_action_head("gmm", {}, 3)
    raw = torch.randn(7, head.output_dim(3), dtype=torch.float64)
    actions = torch.rand(7, 3, dtype=torch.float64) * 2 - 1
    center, scale = torch.zeros(7, 3, dtype=torch.float64), torch.ones(7, 3, dtype=torch.float64)
    means = torch.tanh(raw[:, :15]).reshape(7, 5, 3)
    stds = torch.nn.functional.softplus(raw[:, 15:30]).reshape(7, 5, 3) + 1e-4
    mixture = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=raw[:, 30:]),
        torch.distributions.Independent(torch.distributions.Normal(means, stds), 1),
    )
    torch.testing.assert_close(head.loss(raw, actions, None, center, scale), -mixture.log_prob(actions))
    # evaluation: the mean of the most probable mode
    best = raw[:, 30:].argmax(-1)
    torch.testing.assert_close(head.actions(raw, center, scale), means[torch.arange(7), best])


def test_chunk_targets_stop_at_each_demos_end():
    lengths = [3, 2]
    flat = FlatData(
        counts=torch.tensor([5.0], dtype=torch.float64),
        offsets=torch.tensor([0]),
        observations={},
        actions=torch.arange(5.0)[:, None],
        demo_ends=torch.as_tensor(_demo_ends(lengths)),
    )
    targets = flat.action_targets(torch.tensor([[0, 2, 3]]), horizon=3)
    assert targets["actions"][..., 0].tolist() == [[[0, 1, 2], [2, 2, 2], [3, 4, 4]]]
    assert targets["action_valid"].tolist() == [[[True, True, True], [True, False, False], [True, True, False]]]


def test_temporal_ensemble_equals_acts_formula():
    """ACT (imitate_episodes.py:218-259): all_time_actions[t, t:t+H] = chunk_t; the action at t is
    the exp(-k i)-weighted mean of the populated rows of column t, oldest first."""
    horizon, steps, k = 4, 9, 0.3
    rng = np.random.default_rng(0)
    chunks = rng.normal(size=(steps, horizon, 2))
    table = np.zeros((steps, steps + horizon, 2))
    ensemble = TemporalEnsemble(horizon, k)
    for t in range(steps):
        table[t, t : t + horizon] = chunks[t]
        column = table[:, t]
        column = column[np.all(column != 0, axis=1)]
        weights = np.exp(-k * np.arange(len(column)))
        np.testing.assert_allclose(ensemble(chunks[t]), (weights / weights.sum()) @ column)


HEADS = {"mse": {}, "gmm": {}, "chunk": {"horizon": 3}, "keyframe": {}, "diffusion": {"horizon": 2, "train_steps": 20, "inference_steps": 4}}


def test_every_registered_head_is_covered():
    assert set(HEADS) == set(ACTION_HEADS.names())


@pytest.mark.parametrize("head", sorted(HEADS))
@pytest.mark.parametrize("method", WEIGHTINGS.names())
def test_every_weighting_method_trains_every_head(method, head):
    """Loss-level, gradient and lookahead methods through `MultiTaskBackward.for_agent`: every
    parameter moves and every weight stays finite."""
    weighting = make_weighting(method, 3)
    primary = [0] if weighting.requirements.primary_tasks else None
    agent = small_agent(3, head=head, head_params=HEADS[head])

    def finite(result):
        assert torch.isfinite(result.weights).all()

    train_agent(agent, weighting, steps=2, primary_tasks=primary, check=finite)


@pytest.mark.parametrize("head", sorted(HEADS))
def test_the_batched_and_per_task_losses_agree(head):
    """`task_losses`' direct path and the vmapped per-task path (used by the gradient and lookahead
    methods) give the same K losses for every head."""
    agent = small_agent(3, head=head, head_params=HEADS[head]).eval()
    batch = agent_batch(3, generator=torch.Generator().manual_seed(1), head=head, horizon=agent.action_horizon)

    def seeded(losses_of):  # the diffusion head draws its noise per call, from torch's RNG
        torch.manual_seed(7)
        return losses_of(batch)

    torch.testing.assert_close(seeded(agent.task_losses), seeded(agent), rtol=1e-5, atol=1e-6)
    losses = seeded(lambda b: agent.per_task_gradients(b)[0])
    torch.testing.assert_close(losses, seeded(agent.task_losses), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("head", sorted(HEADS))
def test_act_batch_gives_env_actions_of_the_heads_shape(head):
    agent = small_agent(3, head=head, head_params=HEADS[head]).eval()
    observations = {"state": torch.randn(4, 6)}
    actions = agent.act_batch(observations, torch.tensor([0, 1, 2, 0]))
    dim, horizon = (8 if head == "keyframe" else 3), agent.action_horizon
    assert actions.shape == ((4, horizon, dim) if horizon > 1 else (4, dim))
    if head == "keyframe":
        quaternion = actions[:, 3:7]
        torch.testing.assert_close(quaternion.norm(dim=-1), torch.ones(4))
        assert (quaternion[:, 3] >= 0).all() and set(actions[:, 7].tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("head", ["chunk", "diffusion"])
def test_a_chunk_agent_trains_and_is_evaluated_with_the_temporal_ensemble(tmp_path, head):
    from rlmtl.evaluation.evaluate import evaluate_checkpoint
    from rlmtl.evaluation.settings import EvalSettings
    from rlmtl.training.trainer import Trainer

    write_tiny_dataset(tmp_path / "data.h5")
    overrides = [f"agent.head={head}", "agent.head_params={horizon: 4}", "agent.head_hidden_dim=16"]
    config = load_config(write_config(tmp_path, head, "uniform", steps=4), overrides)
    trainer = Trainer(config, progress=False)
    batch = trainer.parts.sampler.sample()
    assert batch["actions"].shape[2] == 4 and batch["action_valid"].shape == batch["actions"].shape[:3]
    trainer.run()
    result = evaluate_checkpoint(trainer.run_dir, EvalSettings(episodes_per_task=1, workers=1, progress=False))
    assert all(row["episodes"] == 1 for row in result["per_task"].values())


def test_a_head_that_does_not_fit_the_suite_is_refused_at_config_time_naming_the_key(tmp_path):
    config = load_config(write_config(tmp_path, "kf", "uniform"), ["agent.head=keyframe"])
    suite = make_suite(config.env.backend, config.env.suite)
    with pytest.raises(ConfigError, match=r"'agent\.head': keyframe predicts keyframe_pose actions, but metaworld suite .* takes continuous"):
        check_head_fits_suite(config, suite)
    config = load_config(write_config(tmp_path, "long", "uniform"), ["agent.head=chunk", "agent.head_params={horizon: 600}"])
    with pytest.raises(ConfigError, match=r"'agent\.head_params\.horizon': a chunk of 600 actions is longer than an episode"):
        check_head_fits_suite(config, suite)


def test_the_keyframe_head_fits_rlbenchs_keyframe_mode_only():
    from rlmtl.envs.rlbench_backend import KEYFRAME_HORIZON, RLBenchOptions, RLBenchSuite

    suite = RLBenchSuite("auto_lambda_10", ["reach_target"])
    assert suite.action_kind(RLBenchOptions()) == "keyframe_pose"
    assert suite.action_kind(RLBenchOptions(action_mode="joint_velocity")) == "continuous"
    assert suite.episode_limit(RLBenchOptions()) == KEYFRAME_HORIZON


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["agent.head=diffusion_policy"], r"'agent\.head': unknown action head 'diffusion_policy'"),
        (["agent.head=gmm", "agent.head_params={modes: 0}"], r"'agent\.head_params\.modes'"),
        (["agent.head=gmm", "agent.head_params={min_std: .nan}"], r"'agent\.head_params\.min_std'"),
        (["agent.head=chunk", "agent.head_params={horizon: 2.5}"], r"'agent\.head_params\.horizon' must be a whole number"),
        (["agent.head=chunk", "agent.head_params={ensemble_decay: -1}"], r"'agent\.head_params\.ensemble_decay'"),
        (["agent.head=keyframe", "agent.head_params={rotation_resolution: 7}"], r"'agent\.head_params\.rotation_resolution'"),
        (["agent.head=mse", "agent.head_params={horizon: 3}"], r"'agent\.head_params\.horizon': head 'mse' has no parameter"),
        (["agent.head=diffusion"], r"'agent\.head_hidden_dim': the diffusion head needs task heads with a hidden layer"),
        (["agent.head=diffusion", "agent.head_hidden_dim=8", "agent.head_params={inference_steps: 200}"], r"'agent\.head_params\.inference_steps'"),
        (["agent.head=diffusion", "agent.head_hidden_dim=8", "agent.head_params={time_embedding_dim: 7}"], r"'agent\.head_params\.time_embedding_dim'"),
    ],
)
def test_bad_head_settings_are_one_line_errors_naming_the_key(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message) as error:
        load_config(write_config(tmp_path, "bad", "uniform"), overrides)
    assert "\n" not in str(error.value)


def test_gmm_min_std_default_is_robomimics():
    head = make_action_head("gmm", {}, 2)
    assert head.modes == 5 and math.isclose(head.min_std, 1e-4)
