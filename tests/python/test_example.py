"""The example script runs as documented."""

import pathlib
import subprocess
import sys

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "python" / "attention.py"


def test_example_runs():
    result = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "runs on cpu" in result.stdout or "runs on sm80" in result.stdout
    assert "ValueError: k: expected shape" in result.stdout
