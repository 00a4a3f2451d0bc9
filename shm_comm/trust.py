"""Whose segments a channel end accepts: the ownership rule applied on every attach.

``/dev/shm`` is writable by every local user, so the file at a channel's name may be anyone's,
and whoever can write a segment decides what its readers receive (with pickle, what code they
run). So before reading a byte of a segment, an end checks the descriptor it opened (``fstat``
after an ``open`` that follows no symbolic link):

* it is a regular file (not a FIFO, a directory, a device);
* its owner is trusted: this process's effective uid, root (which can take over this process
  anyway), or a user the application named (``trusted_users=`` on the channel end, or the
  ``SHM_COMM_TRUSTED_USERS`` environment variable: user names or uids, comma-separated);
* it is not writable by every user (``o+w``): shm_comm never creates such a segment, so one
  at a channel's name was made or changed by someone else, and anyone could write into it.

A group-writable segment (``Publisher(..., permissions=0o660)``) is accepted when its owner is
trusted: its owner chose to let that group write. docs/security.md states the whole model.
This module decides; it makes no OS calls besides user-name look-ups.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable

from ._backend import backend
from .errors import SHMUntrustedSegmentError

__all__ = ["ENV_TRUSTED_USERS", "check_owner", "describe_user", "trusted_uids"]

ENV_TRUSTED_USERS = "SHM_COMM_TRUSTED_USERS"

TrustedUsers = Iterable[int | str] | None
"""What ``trusted_users=`` takes: user names and/or uids (None: nobody but us and root)."""


def _uid(user: int | str, where: str) -> int:
    if isinstance(user, bool) or not isinstance(user, int | str):
        raise TypeError(f"{where}: expected a user name or uid, got {user!r}")
    if isinstance(user, int):
        if user < 0:
            raise ValueError(f"{where}: a uid cannot be negative, got {user}")
        return user
    user = user.strip()
    if user.isdigit():
        return int(user)
    try:
        return backend.uid_of(user)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def trusted_uids(users: TrustedUsers = None) -> frozenset[int]:
    """The uids whose segments this process accepts: its own effective uid, root, ``users``
    (names or uids) and those in ``$SHM_COMM_TRUSTED_USERS``.

    Raises ``ValueError`` for a user name this system does not know.
    """
    uids = {os.geteuid(), 0}
    if isinstance(users, int | str):
        raise TypeError("trusted_users must be a list of user names or uids, e.g. ['robot']")
    for user in users or ():
        uids.add(_uid(user, "trusted_users"))
    for user in os.environ.get(ENV_TRUSTED_USERS, "").split(","):
        if user.strip():
            uids.add(_uid(user, ENV_TRUSTED_USERS))
    return frozenset(uids)


def describe_user(uid: int) -> str:
    """``"robot (uid 1001)"``, or ``"uid 1001"`` for a uid without a name here."""
    name = backend.user_name(uid)
    return f"{name} (uid {uid})" if name else f"uid {uid}"


def _file_kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def not_a_segment(segment: str, channel: str, st: os.stat_result | None) -> str:
    """The message for a name that holds something other than a regular file."""
    what = "something other than a segment"
    owner = ""
    if st is not None:
        what = _file_kind(st.st_mode)
        owner = f", owned by {describe_user(st.st_uid)}"
    path = backend.display_path(segment)
    return (f"{path} (channel {channel!r}) is {what}{owner}: shm_comm never makes one, so it "
            f"is refused unread; ask its owner or root to remove {path}")


def check_owner(segment: str, channel: str, st: os.stat_result,
                trusted: frozenset[int]) -> None:
    """Raise :class:`SHMUntrustedSegmentError` unless ``st`` (the ``fstat`` of segment
    ``segment`` of ``channel``) is a regular file of a trusted owner, not writable by all.
    """
    if stat.S_ISREG(st.st_mode) and st.st_uid in trusted and not st.st_mode & stat.S_IWOTH:
        return  # the common case: no user-name look-ups
    path = backend.display_path(segment)
    if not stat.S_ISREG(st.st_mode):
        raise SHMUntrustedSegmentError(not_a_segment(segment, channel, st))
    owner = describe_user(st.st_uid)
    if st.st_uid not in trusted:
        name = backend.user_name(st.st_uid) or str(st.st_uid)
        raise SHMUntrustedSegmentError(
            f"segment {path} of channel {channel!r} belongs to user {owner}, whom this process "
            f"(running as {describe_user(os.geteuid())}) does not trust, so it is refused "
            f"unread. If {name} runs this channel's publisher on purpose, trust that user: "
            f"trusted_users=[{name!r}] (or {ENV_TRUSTED_USERS}={name}); if not, somebody else "
            f"holds the channel's name: ask {name} or root to remove {path}"
        )
    if st.st_mode & stat.S_IWOTH:
        raise SHMUntrustedSegmentError(
            f"segment {path} of channel {channel!r} (owner {owner}) is writable by every user "
            f"(mode {stat.S_IMODE(st.st_mode):#o}), so anyone could put messages in it: "
            f"refused unread. shm_comm never creates such a segment; remove {path} (or have "
            "its owner remove it) and restart the publisher"
        )


def name_taken(segment: str, channel: str, st: os.stat_result | None) -> str:
    """The message for a publisher whose channel name is held by another user's segment."""
    path = backend.display_path(segment)
    if st is None:
        return (f"channel {channel!r} cannot be created: {path} exists but cannot be opened "
                "(it belongs to another user or program); ask its owner or root to remove it, "
                "or pick another channel name")
    name = backend.user_name(st.st_uid) or f"uid {st.st_uid}"
    return (f"channel {channel!r} cannot be created: its name {path} is taken by a segment of "
            f"user {describe_user(st.st_uid)}, not by you ({describe_user(os.geteuid())}). "
            f"Another user's segment is never reclaimed or read; ask {name} or root to remove "
            "it, or pick another channel name")
