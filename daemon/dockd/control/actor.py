"""Who asked: the operator named in the journal's transitions and the audit log.

The kernel tells the daemon the connecting process' uid (SO_PEERCRED); under sudo that is root,
which names nobody. So `dockctl` also sends what it knows of the person behind it: SUDO_USER and
SUDO_UID (set by sudo), else its login name. A client can claim anything, so the record keeps
both and says which is which. Where the kernel keeps an audit login uid for the process
(/proc/PID/loginuid, set at login by pam_loginuid and not changeable by the user), it confirms or
contradicts the claim.

    alice (uid 1000)                                   no sudo: the kernel's uid, named
    alice (uid 1000) via sudo as root (uid 0)          sudo claim confirmed by the login uid
    alice (uid 1000, claimed) via sudo as root (uid 0) no login uid to check the claim against
"""

from __future__ import annotations

import pwd
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# Request headers dockctl sets (control/client.py); the daemon never trusts them alone.
SUDO_USER_HEADER = "Dockctl-Sudo-User"
SUDO_UID_HEADER = "Dockctl-Sudo-Uid"
LOGIN_HEADER = "Dockctl-Login"

# /proc/PID/loginuid when no login set it (daemons, containers).
_UNSET_LOGINUID = 4294967295
_NAME = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._@-]{0,63}")


@dataclass(frozen=True)
class Peer:
    """What the kernel says about the connecting process."""

    pid: int | None
    uid: int | None


@dataclass(frozen=True)
class Claim:
    """What the dockctl client says about the person behind it (unverified)."""

    sudo_user: str | None = None
    sudo_uid: int | None = None
    login: str | None = None


def user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def _named(name: str | None, uid: int, note: str = "") -> str:
    return f"{name or 'uid ' + str(uid)} (uid {uid}{note})"


def login_uid(pid: int | None, proc: Path = Path("/proc")) -> int | None:
    """The kernel's audit login uid of `pid`, or None when unset or unreadable."""
    if pid is None or pid <= 0:
        return None
    try:
        value = int((proc / str(pid) / "loginuid").read_text().strip())
    except (OSError, ValueError):
        return None
    return None if value == _UNSET_LOGINUID else value


def claim_from_headers(headers: Mapping[str, str]) -> Claim:
    """The client's claim, keeping only well-formed values (names, decimal uids)."""

    def name(header: str) -> str | None:
        value = headers.get(header, "").strip()
        return value if _NAME.fullmatch(value) else None

    raw_uid = headers.get(SUDO_UID_HEADER, "").strip()
    sudo_uid = int(raw_uid) if raw_uid.isdigit() and len(raw_uid) <= 10 else None
    return Claim(sudo_user=name(SUDO_USER_HEADER), sudo_uid=sudo_uid, login=name(LOGIN_HEADER))


def describe(peer: Peer, claim: Claim, *, loginuid: int | None = None) -> str:
    """One line for the journal and the audit log: the kernel's facts, and the claim beside them."""
    if peer.uid is None:
        return "uid unknown (not a Unix socket peer)"
    kernel = _named(user_name(peer.uid), peer.uid)
    sudo_uid = claim.sudo_uid
    if sudo_uid is None and claim.sudo_user is not None:
        try:
            sudo_uid = pwd.getpwnam(claim.sudo_user).pw_uid
        except KeyError:
            sudo_uid = None
    if sudo_uid is not None and sudo_uid != peer.uid:
        if loginuid == sudo_uid:
            note = ""
        elif loginuid is None:
            note = ", claimed"
        else:
            note = f", claimed; kernel login uid {loginuid}"
        person = _named(claim.sudo_user or user_name(sudo_uid), sudo_uid, note)
        return f"{person} via sudo as {kernel}"
    if loginuid is not None and loginuid != peer.uid:
        return f"{kernel} from login {_named(user_name(loginuid), loginuid)}"
    if claim.login and claim.login != user_name(peer.uid):
        return f"{kernel}, claims login {claim.login}"
    return kernel
