"""A robot's command executor: takes typed commands from command_sender.py and confirms each.

    python examples/command_executor.py     # terminal 1, first
    python examples/command_sender.py       # terminal 2: type commands

A listener thread receives commands (``Replier.recv``) and queues them; the main loop takes
them one at a time, "executes" each and replies ``done``. ``send`` answers the request
received last, so the listener takes the next command only once the last one is answered:
with several senders, each confirmation then reaches the sender of its command. ``ESTOP``
is acknowledged with ``ESTOP_ACK`` and stops the executor; so does Ctrl-C. This is the shape
of a ZeroMQ REQ/REP command loop, and of shm-comm 1.0's example: only 1.0's API is used.
``--channel`` picks another service name than ``robot_commands``.
"""

from __future__ import annotations

import argparse
import queue
import sys
import threading
import time
from typing import Any

from shm_comm import Replier


def listen(replier: Replier, commands: queue.Queue[Any], answered: threading.Event,
           stop: threading.Event) -> None:
    """Receive commands until told to stop (the timeouts keep the stop flag checked)."""
    while not stop.is_set():
        if not answered.wait(timeout=0.2):
            continue
        command = replier.recv(timeout=0.2)
        if command is not None:
            answered.clear()
            commands.put(command)


def execute(channel: str) -> None:
    """Serve commands until ESTOP or Ctrl-C."""
    commands: queue.Queue[Any] = queue.Queue()
    answered, stop = threading.Event(), threading.Event()
    answered.set()
    with Replier(channel, num_slots=16, slot_size=4096) as replier:
        listener = threading.Thread(target=listen, args=(replier, commands, answered, stop),
                                    daemon=True)
        listener.start()
        print(f"executor ready on {channel!r}: waiting for commands (Ctrl-C stops)",
              flush=True)
        try:
            while True:
                try:
                    command = commands.get(timeout=0.5)
                except queue.Empty:
                    continue
                text = str(command).strip()
                print(f"executing {text!r}", flush=True)
                if text.upper() == "ESTOP":
                    replier.send("ESTOP_ACK")
                    print("emergency stop: shutting down", flush=True)
                    break
                time.sleep(0.05)  # the robot's work would happen here
                if not replier.send("done"):
                    print(f"the sender of {text!r} left before its confirmation", flush=True)
                answered.set()
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        finally:
            stop.set()
            listener.join(timeout=2.0)


def main(argv: list[str] | None = None) -> int:
    """Run the executor."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channel", default="robot_commands", help="default: robot_commands")
    execute(parser.parse_args(argv).channel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
