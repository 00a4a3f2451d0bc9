"""Run each tutorial notebook with nbval, in a separate pytest process.

The notebooks are committed without outputs, so nbval executes every cell and fails on any
error; the cells assert what matters. This is the same as

    pytest --nbval notebooks/ --nbval-sanitize-with notebooks/nbval_sanitize.cfg

one notebook at a time, with its own ``--basetemp`` so that it never clears the temp dir of
the pytest run that started it, and its own shared-memory directory (``SHM_COMM_DIR``),
which must be empty at the end. Each tutorial starts ``examples/robot_sim.py`` itself and
stops it in its last cell.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
NOTEBOOK_BUDGET = 60.0  # seconds per notebook, as the tutorials promise
TUTORIALS = [
    "01_getting_started.ipynb",
    "02_typed_numpy_channels.ipynb",
    "03_live_widgets.ipynb",
    "04_performance_tuning.ipynb",
]

pytest.importorskip("nbval")
pytest.importorskip("anywidget")


def test_tutorials_exist() -> None:
    names = {nb.name for nb in NOTEBOOKS}
    for name in TUTORIALS:
        assert name in names


@pytest.fixture
def shm_dir() -> Iterator[Path]:
    """A private directory for the notebook's segments (SHM_COMM_DIR), empty at the end.

    The notebooks use fixed channel names (imu, joints, camera): a simulator someone runs
    on the same machine must not collide with them.
    """
    path = Path(tempfile.mkdtemp(prefix="shmc-nb-", dir="/dev/shm"))
    try:
        yield path
        left = sorted(f.name for f in path.iterdir())
        assert not left, f"segments left behind: {left}"
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_notebook(notebook: Path, tmp_path: Path, shm_dir: Path) -> None:
    start = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable, "-m", "pytest", "--nbval", str(notebook),
            "--nbval-sanitize-with", str(ROOT / "notebooks" / "nbval_sanitize.cfg"),
            f"--basetemp={tmp_path / 'nbval'}", "-p", "no:cacheprovider", "-q",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
        env=dict(os.environ, SHM_COMM_DIR=str(shm_dir)),
    )  # fmt: skip
    elapsed = time.monotonic() - start
    print(f"{notebook.name}: {elapsed:.1f} s")
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert elapsed < NOTEBOOK_BUDGET, f"{notebook.name} took {elapsed:.0f} s"
