"""`rlmtl affinity` end to end on the tiny config."""

import json

import pytest

from rlmtl.cli import main


@pytest.mark.slow
def test_affinity_command_writes_matrix_plots_and_groupings(tiny_config_file, tmp_path, capsys):
    config = tiny_config_file(
        env={"tasks": ["reach-v3", "drawer-close-v3", "window-close-v3"]}, affinity={"probe_every": 5, "max_groups": 2}
    )
    assert main(["affinity", str(config), "--no-progress"]) == 0
    run = tmp_path / "runs" / "tiny"
    content = json.loads((run / "affinity.json").read_text())
    assert content["tasks"] == ["reach-v3", "drawer-close-v3", "window-close-v3"]
    assert len(content["affinity"]) == 3 and all(len(row) == 3 for row in content["affinity"])
    assert "source i" in content["orientation"] and content["history"]
    assert set(content["groupings"]) == {"1", "2"}
    assert content["groupings"]["1"][0]["groups"] == [["reach-v3", "drawer-close-v3", "window-close-v3"]]
    assert content["groupings"]["1"][0]["serve"] == {"reach-v3": 0, "drawer-close-v3": 0, "window-close-v3": 0}
    for name in ("affinity_heatmap.png", "affinity_pairs.png"):
        assert (run / "plots" / name).stat().st_size > 1000
    assert "k=2" in capsys.readouterr().out
    assert "## k = 2" in (run / "groupings.md").read_text()
