"""The README's Python API example runs exactly as printed."""
from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parent.parent / "README.md"


def python_api_example() -> str:
    text = README.read_text()
    section = text[text.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_python_api_example_runs_as_printed():
    code = python_api_example()
    assert "sse.LocalSession()" in code and ".reveal()" in code
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})   # noqa: S102 - our own README
    printed = out.getvalue()
    rows = [[float(v) for v in re.findall(r"[-+]?\d*\.\d+(?:e[-+]?\d+)?|\d+", line)]
            for line in printed.strip().splitlines()]
    y = np.array(rows)
    assert y.shape == (4, 2)
    # sigmoid(relu(.) + 1) lies in [sigmoid(1), 1)
    assert np.all(y >= 1 / (1 + np.exp(-1)) - 1e-3) and np.all(y < 1)
