"""`rlmtl compare` refuses a bad spec with one line naming the spec file and the key (exit 2), before
writing anything; and a spec's runs get their names, overrides and states (rlmtl/compare/spec.py, runs.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from compare_fixtures import write_spec, write_toy_config

from rlmtl.cli import main
from rlmtl.compare.runs import plan_runs, run_state
from rlmtl.compare.spec import load_spec
from rlmtl.config import config_to_yaml, load_config


@pytest.fixture(autouse=True)
def toy_backend(monkeypatch):
    monkeypatch.setenv("RLMTL_PLUGINS", "fault_plugin")


def refuse(capsys, spec, *needles):
    """The spec is refused with exit 2 and one stderr line naming the spec and each needle; nothing written."""
    assert main(["compare", str(spec)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"rlmtl compare: error: {spec}"), err
    for needle in needles:
        assert needle in err, err
    assert not (spec.parent / "out").exists()
    return err


def test_unknown_method_is_refused_naming_it(tmp_path, capsys):
    spec = write_spec(tmp_path, methods=["uniform", "famox"])
    refuse(capsys, spec, "'methods'", "unknown weighting 'famox'", "registered: ")


def test_unknown_part_of_a_composed_method_is_refused(tmp_path, capsys):
    refuse(capsys, write_spec(tmp_path, methods=["uniform", "auto_lambda+cagradd"]), "'methods'", "'cagradd' in 'auto_lambda+cagradd'")


def test_a_composed_method_and_its_run_name(tmp_path):
    spec = load_spec(write_spec(tmp_path, methods=["uniform", "auto_lambda+cagrad"], seeds=[3]))
    names = [run.name for run in plan_runs(spec)]
    assert names == ["toy-uniform-seed3", "toy-auto_lambda+cagrad-seed3"]


@pytest.mark.parametrize(
    "seeds, needle",
    [
        ([0, 1, 0], "'seeds' lists 0 more than once"),
        ([0, -1], "'seeds': -1 is not an integer >= 0"),
        ([0, True], "'seeds': True is not an integer >= 0"),
        ([0, 1.5], "'seeds': 1.5 is not an integer >= 0"),
        ("0,1", "'seeds' must be a non-empty list"),
        ([], "'seeds' must be a non-empty list"),
    ],
)
def test_bad_seed_lists_are_refused(tmp_path, capsys, seeds, needle):
    refuse(capsys, write_spec(tmp_path, seeds=seeds), needle)


def test_unknown_setting_key_is_refused(tmp_path, capsys):
    spec = write_spec(tmp_path, settings={"toy": {"confg": str(tmp_path / "toy.yaml")}})
    refuse(capsys, spec, "unknown key 'settings.toy.confg'", "settings.toy.config")


def test_setting_without_a_config_file_is_refused(tmp_path, capsys):
    spec = write_spec(tmp_path, settings={"toy": {"config": str(tmp_path / "missing.yaml")}})
    refuse(capsys, spec, "'settings.toy.config'", "missing.yaml is not a file")


def test_setting_whose_config_does_not_load_is_refused_naming_setting_and_key(tmp_path, capsys):
    write_toy_config(tmp_path)
    spec = write_spec(tmp_path, settings={"toy": {"config": str(tmp_path / "toy.yaml"), "overrides": ["train.stepz=5"]}})
    refuse(capsys, spec, "'settings.toy' with method 'uniform'", "unknown key 'train.stepz'")


def test_an_override_may_not_set_what_the_comparison_sets(tmp_path, capsys):
    spec = write_spec(tmp_path, settings={"toy": {"config": str(tmp_path / "toy.yaml"), "overrides": ["train.seed=4"]}})
    refuse(capsys, spec, "'settings.toy.overrides'", "sets 'train.seed'")


@pytest.mark.parametrize(
    "keys, needle",
    [
        ({"method": ["uniform"]}, "unknown key 'method'"),
        ({"baseline": "pcgrad"}, "'baseline': 'pcgrad' is not one of the methods"),
        ({"parallel": 0}, "'parallel' must be an integer >= 1"),
        ({"launcher": "pbs"}, "'launcher' must be one of local, slurm"),
        ({"slurm": {"partitin": "gpu"}}, "unknown key 'slurm.partitin'"),
        ({"method_overrides": {"pcgrad": []}}, "'method_overrides.pcgrad'"),
        ({"bootstrap": {"reps": 10}}, "'bootstrap.reps' must be an integer >= 100"),
        ({"methods": ["uniform", "uniform"]}, "'methods' lists uniform more than once"),
    ],
)
def test_other_bad_keys_are_refused(tmp_path, capsys, keys, needle):
    refuse(capsys, write_spec(tmp_path, **keys), needle)


def test_a_spec_that_is_not_yaml_is_refused(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text("out: [unclosed\n")
    refuse(capsys, spec, "not valid YAML")


def test_runs_are_seed_major_with_the_comparisons_overrides_last(tmp_path):
    write_toy_config(tmp_path)
    spec = load_spec(
        write_spec(
            tmp_path,
            settings={"toy": {"config": str(tmp_path / "toy.yaml"), "overrides": ["train.steps=4"]}},
            method_overrides={"famo": ["weighting.params.w_lr=0.5"]},
        )
    )
    runs = plan_runs(spec)
    assert [(r.method, r.seed) for r in runs] == [("uniform", 0), ("famo", 0), ("uniform", 1), ("famo", 1)]
    famo = runs[1]
    assert famo.folder == tmp_path / "out" / "runs" / "toy-famo-seed0"
    assert famo.overrides[:2] == ("train.steps=4", "weighting.params.w_lr=0.5")
    config = load_config(famo.config, [*famo.overrides, "train.num_threads=1"])
    assert (config.weighting.name, config.train.seed, config.train.steps, config.weighting.params["w_lr"]) == ("famo", 0, 4, 0.5)
    assert famo.command(2, resume=True)[-3:] == ["train.num_threads=2", "eval.workers=2", "--resume"]
    assert len({r.digest for r in runs}) == 4


def test_a_setting_may_run_a_subset_of_the_seeds(tmp_path):
    """A setting's own `seeds` (e.g. three seeds only for the row that decides a default) plans only those."""
    write_toy_config(tmp_path)
    config = str(tmp_path / "toy.yaml")
    spec = load_spec(write_spec(tmp_path, seeds=[0, 1, 2], settings={"toy": {"config": config}, "once": {"config": config, "seeds": [1]}}))
    runs = [(r.setting, r.seed) for r in plan_runs(spec) if r.method == "uniform"]
    assert runs == [("toy", 0), ("toy", 1), ("once", 1), ("toy", 2)]


@pytest.mark.parametrize("seeds, needle", [([3], "'settings.once.seeds': 3 not in the spec's 'seeds' [0, 1]"), ([], "'settings.once.seeds' must be")])
def test_a_setting_seed_outside_the_spec_seeds_is_refused(tmp_path, capsys, seeds, needle):
    config = str(write_toy_config(tmp_path))
    refuse(capsys, write_spec(tmp_path, seeds=[0, 1], settings={"once": {"config": config, "seeds": seeds}}), needle)


def _write_run_config(run, **changes):
    run.folder.mkdir(parents=True, exist_ok=True)
    overrides = [*run.overrides, *(f"{k}={v}" for k, v in changes.items())]
    (run.folder / "config.yaml").write_text("# written by rlmtl\n" + config_to_yaml(load_config(run.config, overrides)))


def test_run_states_from_the_folder(tmp_path):
    spec = load_spec(write_spec(tmp_path, seeds=[0]))
    run = plan_runs(spec)[0]
    assert run_state(run)[0] == "new"
    run.folder.mkdir(parents=True)
    assert run_state(run)[0] == "new"  # empty
    # launch keys do not change the digest (an evaluation's results do not depend on its batching either)
    _write_run_config(run, **{"train.num_threads": 2, "eval.workers": 2, "eval.envs_per_worker": 3})
    (run.folder / "tb").mkdir()
    assert run_state(run)[0] == "partial"
    (run.folder / "checkpoints").mkdir()
    (run.folder / "checkpoints" / "last").write_text("step_00000002.pt\n")
    assert run_state(run)[0] == "resume"
    (run.folder / "eval.json").write_text("{}")
    assert run_state(run)[0] == "done"
    _write_run_config(run, **{"train.steps": 7})  # another config in the run's folder
    state, why = run_state(run)
    assert state == "foreign" and "another config" in why


def test_a_foreign_run_folder_stops_the_comparison_before_anything_runs(tmp_path, capsys):
    spec = write_spec(tmp_path, seeds=[0])
    folder = tmp_path / "out" / "runs" / "toy-famo-seed0"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("mine")
    assert main(["compare", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "run toy-famo-seed0" in err and "does not write over it" in err
    assert sorted(os.listdir(tmp_path / "out")) == ["runs"]  # no lock, logs or results
    assert (folder / "notes.txt").read_text() == "mine"


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, capsys):
    spec = write_spec(tmp_path, parallel=2)
    assert main(["compare", str(spec), "--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith("toy-uniform-seed0: new")
    threads = max(1, len(os.sched_getaffinity(0)) // 2)
    assert f"train.num_threads={threads} eval.workers={threads}" in lines[0]
    assert not (tmp_path / "out").exists()


def test_spec_paths_and_yaml_round_trip(tmp_path):
    spec_path = write_spec(tmp_path, out=str(tmp_path / "a folder: with colon"))
    spec = load_spec(spec_path)
    run = plan_runs(spec)[0]
    assert run.folder == tmp_path / "a folder: with colon" / "runs" / "toy-uniform-seed0"
    assert yaml.safe_load(spec_path.read_text())["seeds"] == [0, 1]


@pytest.mark.parametrize("name", ["mt10_weighting.yaml", "smoke.yaml", "slurm_example.yaml"])
def test_the_shipped_specs_load(name, monkeypatch):
    """The specs in configs/compare/ (the README's commands) load from the repository root."""
    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(root)
    spec = load_spec(Path("configs/compare") / name)
    assert spec.baseline in spec.methods and plan_runs(spec)
