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
    for name in ("affinity_heatmap", "affinity_pairs"):
        assert (run / "plots" / f"{name}.png").stat().st_size > 1000
        assert (run / "plots" / f"{name}.pdf").read_bytes().startswith(b"%PDF")
    assert "k=2" in capsys.readouterr().out
    assert "## k = 2" in (run / "groupings.md").read_text()


def test_affinity_figures_are_200_dpi_pngs_with_pdfs(tmp_path):
    import numpy as np
    from PIL import Image

    from rlmtl.tag.report import write_affinity

    tasks = ["reach-v3", "push-v3", "drawer-close-v3"]
    matrix = np.array([[0.0, 0.2, -0.1], [0.05, 0.0, 0.3], [-0.2, 0.1, 0.0]])
    history = [{"step": step, "affinity": (matrix * step / 20).tolist()} for step in (5, 10, 15, 20)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    write_affinity(tmp_path, tasks, matrix, max_groups=2, divide_by_lr=False)
    for name in ("affinity_heatmap", "affinity_pairs"):
        with Image.open(tmp_path / "plots" / f"{name}.png") as image:
            assert round(image.info["dpi"][0]) >= 200
        assert (tmp_path / "plots" / f"{name}.pdf").read_bytes().startswith(b"%PDF")
