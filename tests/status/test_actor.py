"""Who asked: the kernel's uid is the fact, the client's sudo/login claim stands beside it."""

from __future__ import annotations

import pwd

from dockd.control import actor
from dockd.control.actor import Claim, Peer, claim_from_headers, describe, login_uid
from dockd.control.client import operator_headers

ROOT = f"{pwd.getpwuid(0).pw_name} (uid 0)"


def test_without_sudo_the_kernel_uid_is_named():
    assert describe(Peer(1, 0), Claim(login=pwd.getpwuid(0).pw_name)) == ROOT


def test_a_sudo_claim_is_recorded_beside_the_kernel_uid_and_marked_as_a_claim():
    claim = Claim(sudo_user="alice", sudo_uid=4242)
    assert describe(Peer(1, 0), claim) == f"alice (uid 4242, claimed) via sudo as {ROOT}"
    # the kernel's login uid confirms it ...
    assert describe(Peer(1, 0), claim, loginuid=4242) == f"alice (uid 4242) via sudo as {ROOT}"
    # ... or contradicts it, and both are kept
    assert describe(Peer(1, 0), claim, loginuid=4343) == (
        f"alice (uid 4242, claimed; kernel login uid 4343) via sudo as {ROOT}"
    )


def test_su_to_root_is_traced_to_the_login_by_the_kernel():
    assert describe(Peer(1, 0), Claim(), loginuid=4242).startswith(f"{ROOT} from login ")


def test_a_client_cannot_replace_what_the_kernel_says():
    # an unprivileged account claiming to be someone via sudo still shows as itself
    kernel = f"{actor.user_name(4242) or 'uid 4242'} (uid 4242)"
    text = describe(Peer(1, 4242), Claim(sudo_user="bob", sudo_uid=0))
    assert text == f"bob (uid 0, claimed) via sudo as {kernel}"
    assert describe(Peer(None, None), Claim(sudo_user="alice", sudo_uid=1)).startswith(
        "uid unknown"
    )


def test_headers_carry_sudo_and_only_well_formed_values_are_kept():
    headers = operator_headers({"SUDO_USER": "alice", "SUDO_UID": "4242"})
    assert headers[actor.SUDO_USER_HEADER] == "alice"
    assert headers[actor.SUDO_UID_HEADER] == "4242"
    claim = claim_from_headers(headers)
    assert (claim.sudo_user, claim.sudo_uid) == ("alice", 4242)
    forged = claim_from_headers(
        {actor.SUDO_USER_HEADER: "alice\nroot", actor.SUDO_UID_HEADER: "-1", actor.LOGIN_HEADER: ""}
    )
    assert forged == Claim()


def test_login_uid_reads_the_kernels_value_and_treats_unset_as_unknown(tmp_path):
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "loginuid").write_text("1000")
    assert login_uid(7, proc=tmp_path) == 1000
    (tmp_path / "7" / "loginuid").write_text("4294967295")
    assert login_uid(7, proc=tmp_path) is None
    assert login_uid(8, proc=tmp_path) is None
