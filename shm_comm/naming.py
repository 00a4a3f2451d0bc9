"""Channel names and the segment names they map to."""

from __future__ import annotations

import hashlib
import re

__all__ = ["SEGMENT_PREFIX", "is_segment_name", "resolve_segment_name", "segment_name",
           "validate_channel_name"]

SEGMENT_PREFIX = "shmc"
KIND_LETTERS = {"pubsub": "p", "reqrep": "r", "pipeline": "q"}
SEGMENT_PREFIXES = tuple(f"{SEGMENT_PREFIX}{letter}_" for letter in KIND_LETTERS.values())
# shm-comm 1.0 named segments shmcomm_<role>_<channel>; these are the kinds they map to here.
LEGACY_PREFIXES = {"shmcomm_pub_": "pubsub", "shmcomm_req_": "reqrep", "shmcomm_rep_": "reqrep",
                   "shmcomm_push_": "pipeline"}
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


def is_segment_name(name: str) -> bool:
    """Whether ``name`` has the form of one of our segment names (``shmcp_joints`` etc.):
    a kind prefix, then at most 30 characters in all of the characters channel names use."""
    return (name.startswith(SEGMENT_PREFIXES) and len(name) <= MAX_SEGMENT_NAME
            and _VALID.match(name) is not None and ".." not in name)


def resolve_segment_name(name: str) -> str:
    """Our segment name for ``name``: a segment name, a 1.0 segment name or a channel name.

    ``shmcp_joints`` stays as it is; shm-comm 1.0's ``shmcomm_pub_joints``,
    ``shmcomm_req_x``/``shmcomm_rep_x`` and ``shmcomm_push_x`` become the segment of that
    channel and kind here; anything else is taken as a pub/sub channel name. The result is
    always one of our names, never another program's. Raises ``ValueError`` for a name that
    is none of these.
    """
    if not isinstance(name, str):
        raise TypeError(f"segment or channel name must be a str, got {type(name).__name__}")
    if is_segment_name(name):
        return name
    for prefix, kind in LEGACY_PREFIXES.items():
        if name.startswith(prefix):
            return segment_name(kind, name[len(prefix):])
    return segment_name("pubsub", name)
