"""`make demo`'s script on a freshly rendered project: train, serve, predict, stop."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import TEMPLATE_ROOT, free_port, render, run

pytestmark = pytest.mark.slow


def test_demo_trains_serves_and_prints_a_prediction(project_python: Path, tmp_path: Path) -> None:
    project = render(tmp_path / "demo", {})
    result = run(
        [
            sys.executable,
            str(TEMPLATE_ROOT / "hooks" / "demo.py"),
            str(project),
            "--port",
            str(free_port()),
            "--python",
            str(project_python),
        ],
        cwd=TEMPLATE_ROOT,
    )
    printed = result.stdout
    start = printed.index("-> 200") + len("-> 200")
    response = json.loads(printed[start : printed.index("demo: server stopped")])
    assert response["prediction"] in (0, 1)
    assert 0.0 <= response["probability"] <= 1.0
    assert "demo: server stopped" in printed
