"""Config composition through a top-level `base:` key, and `rlmtl config CONFIG [overrides]`, which prints
the resolved config as a run's config.yaml holds it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rlmtl.cli import main
from rlmtl.config import config_to_dict, config_to_yaml, dataset_fingerprint, dataset_path, load_config
from rlmtl.config_files import MAX_BASE_DEPTH, merge
from rlmtl.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("method", ["famo", "auto_lambda", "cagrad"])
def test_shipped_variants_are_rlbench10_plus_their_method_and_name(method):
    """Each variant was a full copy of rlbench10.yaml differing in `name` and `weighting.name`; composed
    from it, it resolves to the same config, dataset and fingerprint (d8d4f663fd, as before)."""
    variant = load_config(CONFIGS / f"rlbench10_{method}.yaml")
    base = load_config(CONFIGS / "rlbench10.yaml")
    expected = config_to_dict(base)
    expected["name"] = f"rlbench10-{method}"
    expected["weighting"]["name"] = method
    assert config_to_dict(variant) == expected
    assert dataset_fingerprint(variant) == dataset_fingerprint(base) == "d8d4f663fd"
    assert dataset_path(variant) == dataset_path(base)
    assert len((CONFIGS / f"rlbench10_{method}.yaml").read_text().splitlines()) <= 8


def write(path: Path, data: dict | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_mappings_merge_key_by_key_and_lists_and_scalars_replace(tmp_path):
    write(
        tmp_path / "base.yaml",
        {
            "env": {"tasks": ["reach-v3", "push-v3"]},
            "train": {"steps": 100, "lr": 0.01},
            "weighting": {"name": "famo", "params": {"gamma": 0.02}},
        },
    )
    child = write(
        tmp_path / "child.yaml",
        {"base": "base.yaml", "env": {"tasks": ["reach-v3"]}, "train": {"steps": 5}, "weighting": {"params": {"w_lr": 0.5}}},
    )
    config = load_config(child)
    assert config.env.tasks == ["reach-v3"]  # a list replaces, it is not appended to
    assert (config.train.steps, config.train.lr) == (5, 0.01)
    assert (config.weighting.name, config.weighting.params["gamma"], config.weighting.params["w_lr"]) == ("famo", 0.02, 0.5)
    assert merge({"a": {"b": 1, "c": [1, 2]}, "d": 1}, {"a": {"c": [3]}, "d": None}) == {"a": {"b": 1, "c": [3]}, "d": None}


def test_a_chain_of_bases_each_relative_to_the_file_naming_it(tmp_path):
    write(tmp_path / "shared" / "root.yaml", {"train": {"steps": 10, "lr": 0.5, "seed": 3}})
    write(tmp_path / "shared" / "middle.yaml", {"base": "root.yaml", "train": {"steps": 20, "lr": 0.25}})
    leaf = write(tmp_path / "runs" / "leaf.yaml", {"base": "../shared/middle.yaml", "train": {"steps": 30}})
    train = load_config(leaf, ["train.seed=4"]).train
    assert (train.steps, train.lr, train.seed) == (30, 0.25, 4)  # leaf, middle, override


def test_base_leaves_no_trace_in_the_resolved_config(tmp_path):
    plain = write(tmp_path / "plain.yaml", {"train": {"steps": 10}, "data": {"demos_per_task": 7}})
    composed = write(tmp_path / "composed.yaml", {"base": "plain.yaml", "data": {"demos_per_task": 7}})
    a, b = load_config(plain), load_config(composed)
    assert config_to_dict(a) == config_to_dict(b) and "base" not in config_to_dict(b)
    assert dataset_fingerprint(a) == dataset_fingerprint(b)


def one_line_error(path: Path) -> str:
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_a_cycle_is_one_line_naming_the_file_and_its_base(tmp_path):
    a = write(tmp_path / "a.yaml", {"base": "b.yaml"})
    write(tmp_path / "b.yaml", {"base": "a.yaml"})
    message = one_line_error(a)
    assert message.startswith(f"{tmp_path / 'b.yaml'}: 'base' names {tmp_path / 'a.yaml'}") and "cycle" in message
    itself = write(tmp_path / "self.yaml", {"base": "./self.yaml"})
    assert "cycle" in one_line_error(itself)


def test_a_missing_base_is_one_line_naming_the_file_and_its_base(tmp_path):
    child = write(tmp_path / "child.yaml", {"base": "nope.yaml"})
    assert one_line_error(child) == f"{child}: 'base' names {tmp_path / 'nope.yaml'}, which does not exist"
    (tmp_path / "folder.yaml").mkdir()
    folder = write(tmp_path / "folder_child.yaml", {"base": "folder.yaml"})
    assert one_line_error(folder).endswith("which is not a file")


@pytest.mark.parametrize(
    "content,problem",
    [("- a\n- b\n", "the top level must be a mapping"), ("train: [unclosed\n", "not valid YAML"), ("a: &x 1\nb: *x\n", "aliases")],
)
def test_a_base_that_is_not_a_mapping_is_one_line_naming_the_file_and_its_base(tmp_path, content, problem):
    write(tmp_path / "base.yaml", content)
    child = write(tmp_path / "child.yaml", {"base": "base.yaml"})
    message = one_line_error(child)
    assert message.startswith(f"{child}: 'base' names {tmp_path / 'base.yaml'}: ") and problem in message


@pytest.mark.parametrize("value", [3, ["a.yaml"], "", None])
def test_base_must_be_a_path(tmp_path, value):
    child = write(tmp_path / "child.yaml", {"base": value})
    assert one_line_error(child).startswith(f"{child}: 'base' must name a config file")


def test_a_chain_deeper_than_the_limit(tmp_path):
    for index in range(MAX_BASE_DEPTH + 1):
        write(tmp_path / f"c{index}.yaml", {"base": f"c{index + 1}.yaml"} if index < MAX_BASE_DEPTH else {})
    assert f"more than {MAX_BASE_DEPTH} files deep" in one_line_error(tmp_path / "c0.yaml")
    assert load_config(tmp_path / "c1.yaml").train.steps == 20000  # exactly the limit is fine


def test_an_unknown_key_in_a_base_names_the_file_and_its_base(tmp_path):
    write(tmp_path / "base.yaml", {"train": {"stepz": 3}})
    child = write(tmp_path / "child.yaml", {"base": "base.yaml"})
    assert one_line_error(child).startswith(f"{child} (base {tmp_path / 'base.yaml'}): unknown key 'train.stepz'")


def test_rlmtl_config_prints_the_resolved_config(tmp_path, capsys):
    variant = str(CONFIGS / "rlbench10_famo.yaml")
    assert main(["config", variant, "train.steps=7", "weighting.params.gamma=0.5"]) == 0
    printed = capsys.readouterr().out
    resolved = load_config(variant, ["train.steps=7", "weighting.params.gamma=0.5"])
    assert printed == config_to_yaml(resolved) and "base" not in yaml.safe_load(printed)
    again = write(tmp_path / "printed.yaml", printed)  # what it prints is a config that loads to the same run
    assert config_to_dict(load_config(again)) == config_to_dict(resolved)
    assert main(["config"]) == 0  # without CONFIG: the reference of every key
    assert capsys.readouterr().out.splitlines()[0].split()[0] == "name"


def test_rlmtl_config_with_a_bad_base_is_exit_2_in_one_line(tmp_path, capsys):
    a = write(tmp_path / "a.yaml", {"base": "a.yaml"})
    assert main(["config", str(a)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"rlmtl config: error: {a}: 'base' names")
