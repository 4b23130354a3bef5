"""The README's standalone weighting example runs, with every registered method."""

import re
from pathlib import Path

import pytest
import torch

from rlmtl.weighting import WEIGHTINGS

README = Path(__file__).resolve().parents[1] / "README.md"


def standalone_example() -> str:
    text = README.read_text()
    match = re.search(r"<!-- standalone-example -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README lost its standalone example"
    return match.group(1)


@pytest.mark.parametrize("method", WEIGHTINGS.names())
def test_standalone_example_runs(method):
    code = standalone_example()
    assert 'make_weighting("famo", K)' in code
    namespace: dict = {}
    exec(compile(code.replace('make_weighting("famo", K)', f'make_weighting("{method}", K)'), str(README), "exec"), namespace)
    model = namespace["model"]
    losses = torch.stack(model(namespace["sample"]()))
    assert losses.isfinite().all()


def test_readme_lists_every_method():
    text = README.read_text()
    missing = [name for name in WEIGHTINGS.names() if f"| `{name}` |" not in text]
    assert not missing, f"README's method table lacks {missing}"
