"""What users on the platforms shm_comm does not support see: a clear error, never a crash.

Only Linux runs here, so these simulate the other platforms where the code decides (the
reported ``sys.platform``, no ``/dev/shm``); they prove the messages and where they are
raised, not that macOS or Windows themselves behave (docs/design.md, "Portability").
"""

from __future__ import annotations

import errno
import subprocess
import sys

import pytest

from shm_comm import Publisher, SHMConnectionError, Subscriber
from shm_comm._backend import backend


def test_windows_import_fails_first_and_says_why() -> None:
    # As on Windows: no fcntl, and maybe no compiled module (pip could not build it). The
    # platform check must come before either is needed.
    code = (
        "import sys\n"
        "sys.platform = 'win32'\n"
        "sys.modules['fcntl'] = None\n"
        "sys.modules['shm_comm._atomic'] = None\n"
        "try:\n"
        "    import shm_comm\n"
        "except ImportError as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.startswith("ImportError shm_comm does not support Windows yet"), out


def test_macos_channel_creation_and_attach_fail_clearly(channel: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # As on macOS: no /dev/shm, so segments would be shm_open objects, which flock refuses.
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(backend, "SHM_DIR", None)
    with pytest.raises(SHMConnectionError, match="cannot create or open channels on macOS"):
        Publisher(channel)
    with pytest.raises(OSError, match="on macOS yet") as raised:
        Subscriber(channel, timeout_connect=5.0)  # at once, not after the timeout
    assert raised.value.errno == errno.ENOTSUP
