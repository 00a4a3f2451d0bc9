"""Fixtures for the real-browser tests: a JupyterLab server and headless Debian Chromium.

The server runs on 127.0.0.1 with a random port, a fixed token, and its own config, data,
runtime and IPython directories under pytest's temp dir, so the user's Jupyter setup is never
read or changed. Its root holds copies of ``notebooks/`` (outputs and widget state stripped)
and ``examples/``, laid out like the repository so notebooks find ``../examples/robot_sim.py``.

Chromium is Debian's ``/usr/bin/chromium`` driven by Playwright's sync API through
``executable_path`` (``playwright install`` is never needed). Without it the tests skip,
except when the ``CI`` environment variable is set: then they fail.

Shared memory is isolated too: ``SHM_COMM_DIR`` points the server, its kernels and the
simulator they start at a fresh directory in ``/dev/shm``, so a simulator or demo that
someone runs on the same machine cannot collide with the notebooks' channel names.

Teardown proves the cleanup: the server is shut down over its REST API, its kernels and
every process they started must exit, that shared-memory directory must be empty, no child
process of pytest may be left, and no segment of the notebooks' channels may remain in
``/dev/shm`` itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]
LOGS = REPO / "logs"
CHROMIUM = Path(os.environ.get("SHM_COMM_CHROMIUM", "/usr/bin/chromium"))
TOKEN = "shm-comm-browser-test"
CHROME_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # Keep timers and requestAnimationFrame running at full speed in headless mode.
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
]
LAB_SETTINGS = {
    # Without this, JupyterLab 4.6 shows a "Select Kernel" dialog that blocks Run All.
    "notebook-extension/tracker": {"autoStartDefaultKernel": True},
    # Without this, a "Get notified about official Jupyter news?" toast covers the page.
    "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
}
SERVER_START_TIMEOUT = 90.0
SHM_ROOT = "/dev/shm"


# Segments of the channels the notebooks create (the simulator's, and the notebooks' own
# "nbN_..." ones). Other segments are ignored: other test runs may be creating theirs.
NOTEBOOK_SEGMENT = re.compile(r"^\.?shmc[a-z]_(imu|joints|camera|nb\d_\w+)\b")


def shm_segments() -> set[str]:
    """Names of the notebook channels' segments currently in /dev/shm."""
    return {p.name for p in Path(SHM_ROOT).iterdir() if NOTEBOOK_SEGMENT.match(p.name)}


def copy_stripped(src: Path, dst: Path) -> None:
    """Copy a notebook without outputs and widget state, so no stale view shows up."""
    nb = nbformat.read(src, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, dst)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def jupyter_lab(tmp: Path, extra_args: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """Run a JupyterLab server in an isolated temp dir; yield its url, token, dirs and pid."""
    root = tmp / "root"
    runtime = tmp / "runtime"
    shm_dir = Path(tempfile.mkdtemp(prefix="shmc-test-", dir=SHM_ROOT))
    (root / "notebooks").mkdir(parents=True)
    for nb in sorted((REPO / "notebooks").glob("*.ipynb")):
        copy_stripped(nb, root / "notebooks" / nb.name)
    shutil.copytree(
        REPO / "examples", root / "examples", ignore=shutil.ignore_patterns("__pycache__")
    )
    # The tuning docs/jupyter.md recommends for live widgets: acknowledgements (comm
    # messages) do not flip JupyterLab's busy indicators. The frame-rate floors are asserted
    # for this configuration; the default one's figures are in docs/jupyter.md.
    (tmp / "config").mkdir(parents=True, exist_ok=True)
    (tmp / "config" / "jupyter_server_config.py").write_text(
        'c.MappingKernelManager.untracked_message_types.append("comm_msg")\n'
    )
    for rel, value in LAB_SETTINGS.items():
        f = tmp / "config/lab/user-settings/@jupyterlab" / f"{rel}.jupyterlab-settings"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(value))
    env = dict(
        os.environ,
        JUPYTER_CONFIG_DIR=str(tmp / "config"),
        JUPYTER_DATA_DIR=str(tmp / "data"),
        JUPYTER_RUNTIME_DIR=str(runtime),
        IPYTHONDIR=str(tmp / "ipython"),
        PYTHONUNBUFFERED="1",
        SHM_COMM_DIR=str(shm_dir),
    )
    LOGS.mkdir(exist_ok=True)
    log_path = LOGS / "jupyterlab.log"
    args = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
        "--ServerApp.ip=127.0.0.1", "--ServerApp.port=0", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
        "--LabApp.news_url=None", "--LabApp.extension_manager=readonly",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        *(extra_args or []),
        *os.environ.get("LAB_EXTRA_ARGS", "").split(),
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT)
    url = ""
    try:
        # --ServerApp.port=0 lets the OS pick the port (no pick-then-bind race); the server
        # writes the real URL into runtime/jpserver-<pid>.json.
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        info_file = runtime / f"jpserver-{proc.pid}.json"
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {proc.returncode}; see {log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"JupyterLab not ready after {SERVER_START_TIMEOUT} s")
            if info_file.exists():
                with contextlib.suppress(ValueError):
                    url = json.loads(info_file.read_text())["url"].rstrip("/")
                if url and _http_ok(f"{url}/api/status?token={TOKEN}"):
                    break
            time.sleep(0.1)
        yield {"url": url, "token": TOKEN, "root": root, "runtime": runtime, "pid": proc.pid,
               "log": log_path, "shm_dir": shm_dir}  # fmt: skip
    finally:
        kernels = []  # and whatever they started (the simulator)
        with contextlib.suppress(psutil.NoSuchProcess):
            kernels = psutil.Process(proc.pid).children(recursive=True)
        if url and proc.poll() is None:
            request = urllib.request.Request(f"{url}/api/shutdown?token={TOKEN}", method="POST")
            with contextlib.suppress(urllib.error.URLError, OSError):
                urllib.request.urlopen(request, timeout=5).close()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        _, alive = psutil.wait_procs(kernels, timeout=10)
        for p in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        left = sorted(f.name for f in shm_dir.iterdir())
        shutil.rmtree(shm_dir, ignore_errors=True)
        assert not alive, f"processes survived the server shutdown: {alive}"
        assert not left, f"shared-memory segments left behind: {left}"


# Module scope for the server and the browser: the autouse leftover check below runs at
# module teardown, after both are gone, and never sees other test directories' processes.
@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A running JupyterLab server (one per test module); see jupyter_lab()."""
    with jupyter_lab(tmp_path_factory.mktemp("lab")) as info:
        yield info


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium through Playwright (skips locally, fails in CI, if absent)."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} not found (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI is set, so the browser tests must run")
        pytest.skip(message)
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROME_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page (1400x1000); console to logs/browser-console.log, last view to last_page.png."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    LOGS.mkdir(exist_ok=True)
    console = (LOGS / "browser-console.log").open("w", encoding="utf-8")

    def on_console(msg: Any) -> None:
        console.write(f"[{msg.type}] {msg.text}\n")

    pg.on("console", on_console)
    pg.on("pageerror", lambda err: console.write(f"[pageerror] {err}\n"))
    try:
        yield pg
    finally:
        with contextlib.suppress(Exception):  # the last state, for failures
            pg.screenshot(path=str(LOGS / "last_page.png"))
        context.close()
        console.close()


@pytest.fixture(scope="module", autouse=True)
def no_leftovers() -> Iterator[None]:
    """After each browser test module: no child process and no new shm_comm segment remain."""
    before = shm_segments()
    yield
    _, alive = psutil.wait_procs(psutil.Process().children(recursive=True), timeout=15)
    assert not alive, f"processes left running: {[(p.pid, p.name()) for p in alive]}"
    deadline = time.monotonic() + 10
    while (left := shm_segments() - before) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"shared-memory segments left in /dev/shm: {sorted(left)}"
