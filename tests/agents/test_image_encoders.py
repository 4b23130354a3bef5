"""Camera encoders (cnn_spatial, resnet18), shared encoders, augmentations and pretrained weights."""

from __future__ import annotations

import pytest
import torch
from synthetic_runs import write_config, write_tiny_dataset
from toy_mtl import agent_batch

from rlmtl.agents import AUGMENTATIONS, ENCODERS, MultiTaskBC
from rlmtl.agents.augmentations import augment
from rlmtl.agents.image_encoders import SpatialSoftmax
from rlmtl.build import check_pretrained_image_encoder
from rlmtl.config import AgentConfig, load_config
from rlmtl.errors import ConfigError


def test_spatial_softmax_finds_a_single_bright_pixel():
    pool = SpatialSoftmax(1, 5, 7, keypoints=1, temperature=0.01)
    with torch.no_grad():
        pool.keypoints_conv.weight.fill_(1.0)
        pool.keypoints_conv.bias.zero_()
    features = torch.zeros(1, 1, 5, 7)
    features[0, 0, 4, 0] = 1.0  # bottom-left: x = -1, y = +1
    torch.testing.assert_close(pool(features), torch.tensor([[-1.0, 1.0]]), atol=1e-3, rtol=0)


@pytest.mark.parametrize("name", ["cnn", "cnn_spatial", "resnet18"])
def test_image_encoders_train_under_the_per_task_gradient_path(name):
    torch.manual_seed(0)
    shapes = {"proprio": (4,), "rgb_cam": (32, 32, 3)}
    agent = MultiTaskBC(shapes, 3, 2, 32, AgentConfig(hidden_dim=16, image_channels=[8, 8], image_encoder=name)).eval()
    batch = agent_batch(2, images=True, generator=torch.Generator().manual_seed(0))
    batch["obs"]["rgb_cam"] = torch.randint(0, 256, (2, 5, 32, 32, 3), dtype=torch.uint8)
    losses, grads = agent.per_task_gradients(batch)
    torch.testing.assert_close(losses, agent.task_losses(batch), rtol=1e-4, atol=1e-5)
    assert all(torch.isfinite(g).all() for g in grads["encoder"].values())


def test_a_shared_encoder_serves_every_camera_with_one_set_of_weights():
    shapes = {"rgb_a": (16, 16, 3), "rgb_b": (16, 16, 3)}
    own = MultiTaskBC(shapes, 3, 2, 16, AgentConfig(hidden_dim=16, image_channels=[8, 8]))
    shared = MultiTaskBC(shapes, 3, 2, 16, AgentConfig(hidden_dim=16, image_channels=[8, 8], share_image_encoder=True))
    assert list(own.encoder.image_encoders) == ["rgb_a", "rgb_b"] and list(shared.encoder.image_encoders) == ["shared"]
    images = {key: torch.randint(0, 256, (3, 16, 16, 3), dtype=torch.uint8) for key in shapes}
    assert shared.eval().act_batch(images, torch.tensor([0, 1, 0])).shape == (3, 3)


@pytest.mark.parametrize("name", ["shift", "crop", "color"])
def test_augmentations_keep_shape_and_range_and_differ_per_image(name):
    torch.manual_seed(0)
    images = torch.rand(1, 3, 24, 24).expand(6, -1, -1, -1).contiguous()
    out = augment(images, [name])
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(out[0], out[1])  # independent parameters per image


def test_color_jitter_at_zero_strength_is_the_identity(monkeypatch):
    import rlmtl.agents.augmentations as augmentations

    monkeypatch.setattr(augmentations, "COLOR_JITTER", 0.0)
    images = torch.rand(4, 3, 8, 8)
    torch.testing.assert_close(augment(images, ["color"]), images, atol=1e-5, rtol=0)


def test_unknown_encoder_or_augmentation_is_refused_naming_the_key(tmp_path):
    config = write_config(tmp_path, "x", "uniform")
    with pytest.raises(ConfigError, match=r"'agent\.image_encoder': unknown encoder 'vit'"):
        load_config(config, ["agent.image_encoder=vit"])
    with pytest.raises(ConfigError, match=r"'agent\.augmentations': unknown augmentation 'mixup' \(registered: color, crop, shift\)"):
        load_config(config, ["agent.augmentations=[shift, mixup]"])
    assert set(AUGMENTATIONS.names()) == {"shift", "crop", "color"} and "resnet18" in ENCODERS


def _resnet_config(tmp_path, weights):
    write_tiny_dataset(tmp_path / "data.h5", image_size=32)
    return load_config(
        write_config(tmp_path, "pre", "uniform"),
        [
            "env.cameras=[corner]",
            "env.image_size=32",
            "agent.obs_keys=[proprio, rgb_corner]",
            "agent.image_encoder=resnet18",
            f"agent.pretrained_image_encoder={weights}",
        ],
    )


def test_pretrained_weights_load_by_torchvision_names_and_bad_files_are_refused_naming_the_entry(tmp_path, monkeypatch):
    from rlmtl.agents import pretrained
    from rlmtl.training.trainer import Trainer

    encoder = ENCODERS.get("resnet18")(32, [], 16)
    state = {name: torch.full_like(value, 0.25) for name, value in encoder.state_dict().items() if name.startswith(("conv1", "layer1"))}
    state["bn1.running_mean"] = torch.zeros(64)  # BatchNorm statistics of a torchvision file are skipped
    state["fc.weight"] = torch.zeros(1000, 512)  # and its classifier
    good = tmp_path / "good.pt"
    torch.save(state, good)
    config = _resnet_config(tmp_path, good)
    reads = []
    monkeypatch.setattr(pretrained, "read_pretrained", lambda path, read=pretrained.read_pretrained: reads.append(path) or read(path))
    trainer = Trainer(config, progress=False)
    assert reads == [str(good)]  # checked and loaded from one read of the file
    loaded = trainer.parts.agent.encoder.image_encoders["rgb_corner"]
    assert torch.equal(loaded.conv1.weight, torch.full_like(loaded.conv1.weight, 0.25))
    trainer.release()

    wrong = tmp_path / "wrong.pt"
    torch.save({"conv1.weight": torch.zeros(64, 3, 3, 3)}, wrong)
    with pytest.raises(ConfigError, match=r"'agent\.pretrained_image_encoder': .*wrong\.pt: 'conv1\.weight' has shape \(64, 3, 3, 3\), the encoder's is \(64, 3, 7, 7\)"):
        check_pretrained_image_encoder(_resnet_config(tmp_path, wrong))
    unknown = tmp_path / "unknown.pt"
    torch.save({"head.weight": torch.zeros(3)}, unknown)
    with pytest.raises(ConfigError, match=r"'head\.weight' is not a weight of the ResNet18Encoder"):
        check_pretrained_image_encoder(_resnet_config(tmp_path, unknown))
    with pytest.raises(ConfigError, match=r"no such file"):
        check_pretrained_image_encoder(_resnet_config(tmp_path, tmp_path / "missing.pt"))
