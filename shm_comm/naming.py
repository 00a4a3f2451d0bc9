"""Channel names and the segment names they map to."""

from __future__ import annotations

import hashlib
import re

__all__ = ["SEGMENT_PREFIX", "segment_name", "validate_channel_name"]

SEGMENT_PREFIX = "shmc"
KIND_LETTERS = {"pubsub": "p", "reqrep": "r", "pipeline": "q"}
MAX_CHANNEL_NAME = 200
# macOS allows 31 characters for a POSIX shm name including its leading "/".
MAX_SEGMENT_NAME = 30
_VALID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*\Z")


def validate_channel_name(name: object) -> str:
    """Return ``name`` if it is a valid channel name, else raise ``ValueError``/``TypeError``.

    Valid: 1 to 200 ASCII letters, digits, ``_``, ``-`` and ``.``, starting with a letter, digit
    or ``_``, without ``..``. Path separators and other characters are refused, not mapped.
    """
    if not isinstance(name, str):
        raise TypeError(f"channel name must be a str, got {type(name).__name__}")
    if not name:
        raise ValueError("channel name is empty")
    if len(name) > MAX_CHANNEL_NAME:
        raise ValueError(f"channel name is {len(name)} characters; at most {MAX_CHANNEL_NAME}")
    if not _VALID.match(name) or ".." in name:
        raise ValueError(
            f"invalid channel name {name!r}: use ASCII letters, digits, '_', '-' and '.', "
            "starting with a letter, digit or '_'; no '/', no '..'"
        )
    return name


def segment_name(kind: str, channel: str) -> str:
    """The shared-memory object name of ``channel`` of ``kind`` (pubsub, reqrep, pipeline).

    Short names map directly (``shmcp_joints``); names too long for macOS's 31-character
    limit keep their first characters and gain a hash (``shmcp_very_long_n_1a2b3c4d5e6f``).
    The full channel name is stored in the segment header and checked on attach.
    """
    validate_channel_name(channel)
    if kind not in KIND_LETTERS:
        raise ValueError(f"kind must be one of {', '.join(KIND_LETTERS)}, got {kind!r}")
    prefix = f"{SEGMENT_PREFIX}{KIND_LETTERS[kind]}_"
    direct = prefix + channel
    if len(direct) <= MAX_SEGMENT_NAME:
        return direct
    digest = hashlib.blake2b(channel.encode(), digest_size=6).hexdigest()
    keep = MAX_SEGMENT_NAME - len(prefix) - len(digest) - 1
    return f"{prefix}{channel[:keep]}_{digest}"
