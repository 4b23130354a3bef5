"""Plugins from installed distributions (entry point group `rlmtl.plugins`) and from RLMTL_PLUGINS, loaded
by the CLI and by every pool worker.

The distributions are real to importlib.metadata: a `*.dist-info` folder with METADATA and
entry_points.txt on sys.path is what pip leaves in site-packages, and is found the same way."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from rlmtl.cli import main
from rlmtl.config import load_config
from rlmtl.errors import RlmtlError
from rlmtl.plugins import load_plugins
from rlmtl.pool import Job, RobustPool
from rlmtl.weighting import WEIGHTINGS, make_weighting

PLUGIN_MODULE = "rlmtl_entry_point_test_weighting"
PLUGIN_WEIGHTING = "entry_point_half"

WEIGHTING_SOURCE = f'''
from rlmtl.weighting.base import register_weighting
from rlmtl.weighting.methods.uniform import Uniform


@register_weighting("{PLUGIN_WEIGHTING}")
class Half(Uniform):
    """Every task weighted 1/2 (a plugin of the tests)."""

    def __init__(self, num_tasks: int) -> None:
        super().__init__(num_tasks)
        self.weights.fill_(0.5)
'''


def install(site: Path, distribution: str, entry_points: dict[str, str], modules: dict[str, str] | None = None) -> None:
    """Write `distribution` as pip installs it into `site`: its modules and a dist-info folder."""
    info = site / f"{distribution.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 0.1\n")
    lines = [f"{name} = {target}" for name, target in entry_points.items()]
    (info / "entry_points.txt").write_text("[rlmtl.plugins]\n" + "\n".join(lines) + "\n")
    for name, source in (modules or {}).items():
        (site / f"{name}.py").write_text(source)


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A site-packages folder on sys.path (and the plugin's registration undone afterwards)."""
    folder = tmp_path / "site-packages"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delenv("RLMTL_PLUGINS", raising=False)
    yield folder
    WEIGHTINGS.unregister(PLUGIN_WEIGHTING)
    for name in [name for name in sys.modules if name.startswith(PLUGIN_MODULE)]:
        del sys.modules[name]


@pytest.fixture
def installed(site):
    """rlmtl-test-plugin: one entry point naming a module, one naming an object in it."""
    entry_points = {"half": PLUGIN_MODULE, "half_class": f"{PLUGIN_MODULE}:Half"}
    install(site, "rlmtl-test-plugin", entry_points, {PLUGIN_MODULE: WEIGHTING_SOURCE})
    return site


def test_an_installed_entry_point_registers_a_weighting(installed):
    assert PLUGIN_WEIGHTING not in WEIGHTINGS
    assert {"half", "half_class"} <= set(load_plugins())
    config = load_config(None, [f"weighting.name={PLUGIN_WEIGHTING}"])
    assert make_weighting(config.weighting.name, 3).weights.tolist() == [0.5, 0.5, 0.5]
    load_plugins()  # again (each worker does; the CLI and a test may both): nothing is registered twice


def test_the_cli_loads_entry_points(installed, capsys):
    assert main(["list", "--json"]) == 0
    assert PLUGIN_WEIGHTING in json.loads(capsys.readouterr().out)["weightings"]


def weighting_names() -> list[str]:
    """A pool job: the weightings registered in the worker."""
    return WEIGHTINGS.names()


def test_every_pool_worker_loads_entry_points(installed):
    """The parent never loads the plugin: the spawn-started worker finds the entry point itself."""
    with RobustPool(1) as pool:
        [result] = list(pool.run([Job(key="names", fn=weighting_names, args=())]))
    assert result.ok, result.error
    assert PLUGIN_WEIGHTING in result.value and PLUGIN_WEIGHTING not in WEIGHTINGS


def test_a_failing_entry_point_names_itself_and_its_distribution_in_one_line(site, capsys):
    failing = "def broken():\n    raise RuntimeError('no simulator here\\nsecond line')\nbroken()\n"
    install(site, "rlmtl-broken-plugin", {"robots": f"{PLUGIN_MODULE}_broken"}, {f"{PLUGIN_MODULE}_broken": failing})
    with pytest.raises(RlmtlError) as error:
        load_plugins()
    message = str(error.value)
    assert "entry point 'robots'" in message and "distribution 'rlmtl-broken-plugin'" in message
    assert "RuntimeError: no simulator here" in message and "\n" not in message
    assert main(["list"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rlmtl list: error: entry point 'robots'")


def test_an_entry_point_naming_a_missing_module(site):
    install(site, "rlmtl-typo-plugin", {"typo": "rlmtl_no_such_plugin_module"})
    with pytest.raises(RlmtlError, match="entry point 'typo' = 'rlmtl_no_such_plugin_module' of distribution 'rlmtl-typo-plugin'"):
        load_plugins()


def test_rlmtl_plugins_modules_still_load(site, monkeypatch):
    (site / f"{PLUGIN_MODULE}.py").write_text(WEIGHTING_SOURCE)
    monkeypatch.setenv("RLMTL_PLUGINS", f" {PLUGIN_MODULE} ,")
    assert load_plugins() == [PLUGIN_MODULE] and PLUGIN_WEIGHTING in WEIGHTINGS
    monkeypatch.setenv("RLMTL_PLUGINS", "rlmtl_no_such_plugin_module")
    with pytest.raises(RlmtlError, match="RLMTL_PLUGINS: cannot import plugin module 'rlmtl_no_such_plugin_module'"):
        load_plugins()
