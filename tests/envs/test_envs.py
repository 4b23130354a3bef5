import numpy as np
import pytest

from rlmtl.envs import BACKENDS, EnvSettings, make_suite, scene_seed


@pytest.fixture(scope="module")
def suite():
    return make_suite("metaworld", "mt10")


def test_registry_and_suite(suite):
    assert "metaworld" in BACKENDS
    assert len(suite.task_names) == 10 and suite.task_names[0] == "reach-v3" and suite.task_names[-1] == "window-close-v3"
    assert suite.action_spec().shape == (4,)
    spec = suite.observation_spec(["corner"], 32)
    assert spec["state"].shape == (39,) and spec["proprio"].shape == (4,) and spec["rgb_corner"].shape == (32, 32, 3)
    with pytest.raises(KeyError, match="unknown task 'fly-v3'"):
        suite.select_tasks(["fly-v3"])
    with pytest.raises(KeyError, match="unknown suite 'mt100'"):
        make_suite("metaworld", "mt100")
    mt50 = make_suite("metaworld", "mt50")
    assert len(mt50.task_names) == len(set(mt50.task_names)) == 50 and set(suite.task_names) < set(mt50.task_names)
    with pytest.raises(KeyError, match="unknown backend"):
        make_suite("gazebo", "mt10")
    with pytest.raises(KeyError, match="camera"):
        suite.observation_spec(["nope"], 32)


def test_scene_seeds_are_split_disjoint_and_stable():
    train = {scene_seed("train", 0, t, e) for t in range(10) for e in range(200)}
    evaluation = {scene_seed("eval", 0, t, e) for t in range(10) for e in range(200)}
    assert len(train) == 2000 and len(evaluation) == 2000
    assert not train & evaluation
    assert scene_seed("train", 0, 3, 7) == scene_seed("train", 0, 3, 7)
    with pytest.raises(ValueError):
        scene_seed("test", 0, 0, 0)


def test_seeded_reset_is_reproducible_and_scenes_differ(suite):
    env = suite.make_env(EnvSettings("metaworld", "mt10", "push-v3"))
    first, info_a = env.reset(seed=11)
    actions = np.random.default_rng(0).uniform(-1, 1, (20, 4))
    trajectory_a = [env.step(a)[0]["state"] for a in actions]
    other, info_other = env.reset(seed=12)
    again, info_b = env.reset(seed=11)
    trajectory_b = [env.step(a)[0]["state"] for a in actions]
    env.close()
    np.testing.assert_array_equal(first["state"], again["state"])
    np.testing.assert_array_equal(np.stack(trajectory_a), np.stack(trajectory_b))
    np.testing.assert_array_equal(info_a["scene"], info_b["scene"])
    assert not np.allclose(info_a["scene"], info_other["scene"])
    assert first["state"].dtype == np.float32 and first["state"].shape == (39,)
    np.testing.assert_array_equal(first["proprio"], first["state"][:4])


def test_reset_requires_a_seed(suite):
    env = suite.make_env(EnvSettings("metaworld", "mt10", "reach-v3"))
    with pytest.raises(ValueError, match="seed"):
        env.reset()
    env.close()


def test_expert_solves_and_episode_truncates(suite):
    env = suite.make_env(EnvSettings("metaworld", "mt10", "reach-v3", max_episode_steps=300))
    expert = suite.make_expert("reach-v3")
    observation, _ = env.reset(seed=scene_seed("train", 0, 0, 0))
    for step in range(300):
        observation, _, success, truncated, info = env.step(expert(observation))
        if success:
            break
    assert success and info["success"] and step < 200
    env.reset(seed=5)
    zero = np.zeros(4, np.float32)
    flags = [env.step(zero)[3] for _ in range(300)]
    assert flags[-1] and not any(flags[:-1])
    env.close()


def test_images_render_upright_and_not_blank(suite):
    env = suite.make_env(
        EnvSettings(
            "metaworld", "mt10", "drawer-close-v3", cameras=("corner", "topview"), image_size=48, video_size=64, video_camera="corner"
        )
    )
    observation, _ = env.reset(seed=3)
    for key in ("rgb_corner", "rgb_topview"):
        image = observation[key]
        assert image.shape == (48, 48, 3) and image.dtype == np.uint8
        assert image.std() > 10, f"{key} looks blank"
    frame = env.render()
    assert frame.shape == (64, 64, 3) and frame.std() > 10
    # corner is flipped upright: the bright sky/floor gradient puts the floor (table) at the bottom,
    # and the table is darker than the background above it.
    image = observation["rgb_corner"].astype(float)
    assert image[-8:].mean() < image[:8].mean()
    changed, *_ = env.step(np.array([0.0, 0.0, -1.0, 0.0], np.float32))
    env.close()
    assert changed["rgb_corner"].shape == (48, 48, 3)


def test_camera_fovy_zooms_the_observation_cameras_only(suite):
    """`env.options.camera_fovy` narrows the observation cameras' field of view on the env's own
    model: the image changes, the physics and the other cameras do not."""
    from rlmtl.envs.metaworld_backend import MetaWorldOptions

    def first(options):
        settings = EnvSettings("metaworld", "mt10", "push-v3", cameras=("corner",), image_size=32, options=options)
        env = suite.make_env(settings)
        observation, _ = env.reset(seed=3)
        fovy = {camera: float(env._env.model.camera(camera).fovy[0]) for camera in ("corner", "corner2")}
        env.close()
        return observation, fovy

    default, default_fovy = first(None)
    zoomed, zoomed_fovy = first(MetaWorldOptions(camera_fovy=25.0))
    assert default_fovy == {"corner": 45.0, "corner2": 60.0}  # Meta-World's own views
    assert zoomed_fovy == {"corner": 25.0, "corner2": 60.0}
    assert np.abs(zoomed["rgb_corner"].astype(int) - default["rgb_corner"].astype(int)).mean() > 5
    np.testing.assert_array_equal(zoomed["state"], default["state"])


def test_a_tasks_next_env_copies_the_compiled_model_and_runs_the_same(suite, monkeypatch):
    """The XML is compiled once per process; the copy each later env gets is its own and steps
    exactly as a freshly compiled one (same scene, same actions, same states)."""
    from rlmtl.envs import metaworld_backend

    monkeypatch.setattr(metaworld_backend, "_COMPILED", {})
    settings = EnvSettings("metaworld", "mt10", "pick-place-v3", cameras=("corner",), image_size=16)
    actions = np.random.default_rng(1).uniform(-1, 1, (30, 4))

    def states(env):
        first, _ = env.reset(seed=5)
        return np.stack([first["state"], *(env.step(a)[0]["state"] for a in actions)])

    compiled = suite.make_env(settings)  # compiles the XML
    assert len(metaworld_backend._COMPILED) == 1
    kept = next(iter(metaworld_backend._COMPILED.values()))
    copied = suite.make_env(settings)
    assert len(metaworld_backend._COMPILED) == 1 and copied._env.model is not compiled._env.model is not kept
    # rendering settings (shadows off) were set on each env's own model, not on the kept one
    assert not copied._env.model.light_castshadow.any() and kept.light_castshadow.any()
    np.testing.assert_array_equal(states(compiled), states(copied))
    monkeypatch.setattr(metaworld_backend, "_COMPILED", {})
    fresh = suite.make_env(settings)
    np.testing.assert_array_equal(states(fresh), states(copied))
    for env in (compiled, copied, fresh):
        env.close()
