"""Type commands for command_executor.py and see each one confirmed.

    python examples/command_executor.py     # terminal 1, first
    python examples/command_sender.py       # terminal 2: type a command, press Enter

Each line read from the terminal (or a pipe) is sent as a request; the executor answers
``done`` once it has run it. ``ESTOP`` stops the executor (and this sender), ``quit`` or
end of input stops the sender only. Exits with 1 if no executor is running. Uses only
shm-comm 1.0's API. ``--channel`` picks another service name than ``robot_commands``.
"""

from __future__ import annotations

import argparse
import sys

from shm_comm import Requester, SHMConnectionError, SHMTimeoutError


def send_commands(channel: str) -> int:
    """Read commands from stdin until quit, ESTOP or end of input; the exit status."""
    try:
        requester = Requester(channel, timeout_connect=10.0)
    except SHMConnectionError:
        print(f"no executor on {channel!r}: start examples/command_executor.py first",
              file=sys.stderr)
        return 1
    with requester:
        print(f"connected to {channel!r}; type a command ('ESTOP' stops the robot, "
              "'quit' this sender)", flush=True)
        for line in sys.stdin:
            command = line.strip()
            if not command:
                continue
            if command.lower() == "quit":
                break
            try:
                reply = requester.request(command, timeout=5.0)
            except SHMTimeoutError:
                print(f"{command!r}: no confirmation within 5 s", flush=True)
                continue
            except SHMConnectionError:
                print("the executor has gone", file=sys.stderr)
                return 1
            print(f"{command!r}: {reply}", flush=True)
            if reply == "ESTOP_ACK":
                print("the executor has stopped", flush=True)
                break
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the sender."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channel", default="robot_commands", help="default: robot_commands")
    return send_commands(parser.parse_args(argv).channel)


if __name__ == "__main__":
    sys.exit(main())
