"""A new user's first minutes: every hint they meet must be true and lead somewhere.

Missing optional packages name the extra with the command that works in a checkout install;
wrong-typed or wrong-channel calls say what to use instead; the CLI suggests the channel a
typo meant and prints float32 values with the digits a float32 has.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT

from shm_comm import ArrayPublisher, Publisher, Subscriber, decode_array
from shm_comm.cli import main
from shm_comm.errors import SHMSerializationError


def run_without(module: str, code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter where ``module`` cannot be imported."""
    prelude = f"import sys\nsys.modules[{module!r}] = None\n"
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True,
                          text=True, timeout=60, cwd=str(ROOT))


# --------------------------------------------------------------------------------------------
# Optional packages
# --------------------------------------------------------------------------------------------

def test_widgets_without_anywidget_say_what_to_install() -> None:
    result = run_without("anywidget", "from shm_comm.widgets import LivePlot\n")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ModuleNotFoundError: shm_comm.widgets needs the 'jupyter' extra")
    assert 'pip install -e ".[jupyter]"' in last
    assert "pip install anywidget" in last


def test_awaiting_under_trio_without_anyio_says_what_to_install() -> None:
    code = ("import os, trio\n"
            "from shm_comm import Publisher, Subscriber\n"
            "name = f'first_contact_anyio_{os.getpid()}'\n"
            "with Publisher(name) as pub, Subscriber(name) as sub:\n"
            "    trio.run(sub.recv_async, 0.05)\n")
    result = run_without("anyio", code)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ModuleNotFoundError: awaiting shm_comm outside asyncio needs the "
                           "'async' extra"), last
    assert 'pip install -e ".[async]"' in last
    assert "pip install anyio" in last


@pytest.mark.parametrize(("module", "argv", "extra", "package"), [
    ("mcap", ["record", "imu", "-o", "{tmp}/run.mcap"], "record", "mcap"),
    ("mcap", ["play", "{tmp}/run.mcap"], "record", "mcap"),
    ("zenoh", ["bridge", "--export", "imu"], "bridge", "eclipse-zenoh"),
])
def test_cli_without_optional_package_fails_first(tmp_path: Path, module: str, argv: list[str],
                                                  extra: str, package: str) -> None:
    args = [arg.format(tmp=tmp_path) for arg in argv]
    result = run_without(module, f"from shm_comm.cli import main\nsys.exit(main({args!r}))\n")
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""  # nothing announced ("recording ...", "playing ...") before it
    assert f'pip install -e ".[{extra}]"' in result.stderr
    assert f"pip install {package}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run.mcap").exists()


# --------------------------------------------------------------------------------------------
# Typed channels
# --------------------------------------------------------------------------------------------

def test_plain_subscriber_on_an_array_channel_points_to_array_subscriber(channel: str) -> None:
    with ArrayPublisher(channel, dtype=np.float32, shape=(3,)) as pub, Subscriber(channel) as sub:
        pub.send(np.array([1.0, 2.0, 3.0], dtype=np.float32))
        with pytest.raises(SHMSerializationError) as excinfo:
            sub.recv(timeout=1.0)
        message = str(excinfo.value)
        assert "ArraySubscriber" in message
        assert "decode_array" in message
        assert "serialization=" not in message  # there is no serialization='array'
        # Both pieces of advice work.
        pub.send(np.array([4.0, 5.0, 6.0], dtype=np.float32))
        raw = sub.recv_bytes(timeout=1.0)
        assert raw is not None
        arr, _header = decode_array(raw)
        assert arr.tolist() == [4.0, 5.0, 6.0]


def test_array_publisher_given_a_list_says_how_to_convert_it(channel: str) -> None:
    with ArrayPublisher(channel, dtype=np.float32, shape=(3,)) as pub:
        with pytest.raises(TypeError) as excinfo:
            pub.send([1, 2, 3])
        message = str(excinfo.value)
        assert "astype" not in message  # a list has none
        assert "got a list" in message
        assert "np.asarray(value, dtype='float32')" in message
        assert pub.send(np.asarray([1, 2, 3], dtype="float32")) is True  # the advice works
        with pytest.raises(TypeError, match=r"arr\.astype\('float32'\)"):
            pub.send(np.arange(3))  # an array has


# --------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("verb", ["echo", "hz", "bw", "info", "record"])
def test_cli_suggests_the_channel_a_typo_meant(channel: str, verb: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    imu = f"{channel}_imu"
    args = [verb, f"{imu}u", "--timeout", "0"]
    if verb == "record":
        pytest.importorskip("mcap")
        args += ["-o", str(tmp_path / "run.mcap")]
    with Publisher(imu):
        assert main(args) == 1
    err = capsys.readouterr().err
    assert f"did you mean {imu!r}?" in err
    assert "`shm-comm list`" in err
    assert not (tmp_path / "run.mcap").exists()


def test_cli_suggests_nothing_when_nothing_is_close(channel: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    with Publisher(f"{channel}_imu"):
        assert main(["echo", "zqxjv", "--timeout", "0"]) == 1  # like no channel anywhere
    err = capsys.readouterr().err
    assert "did you mean" not in err
    assert "no channel" in err


def test_echo_prints_float32_at_float32_precision(channel: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    values = np.array([0.05219842866063118, -1.5, 3.0e-8], dtype=np.float32)
    struct = np.zeros(1, dtype=[("stamp", "<f8"), ("acc", "<f4", (3,))])
    struct["stamp"], struct["acc"] = 1795737504.110964, values
    typed = f"{channel}_struct"
    with ArrayPublisher(channel, dtype=np.float32, shape=(3,)) as pub, ArrayPublisher(
            typed, dtype=struct.dtype, shape=(1,)) as spub:
        pub.send(values)
        spub.send(struct)
        assert main(["echo", channel, "-n", "1", "--latest"]) == 0
        text = capsys.readouterr().out
        assert "[0.05219843, -1.5, 3e-08]" in text
        assert "0.052198428" not in text
        assert main(["echo", channel, "-n", "1", "--latest", "--json"]) == 0
        message = json.loads(capsys.readouterr().out)
        got = message["value"]["ndarray"]["values"]
        assert got == [0.05219843, -1.5, 3e-08]
        assert (np.array(got, dtype=np.float32) == values).all()  # reads back exactly
        assert main(["echo", typed, "-n", "1", "--latest"]) == 0
        text = capsys.readouterr().out
        assert "acc: float32 (1, 3)  [[0.05219843, -1.5, 3e-08]]" in text
        assert "stamp: float64 (1,)  [1795737504.110964]" in text  # float64 keeps its digits
