"""A full disk: 507, nothing acknowledged that is not stored, and the upload resumes once there
is room again. Needs root to mount a small tmpfs as the store."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from dockd.receiver.quota import Quotas
from support.receiver import Tus, partial_size, running_receiver, upload_id_of

MiB = 1 << 20

pytestmark = pytest.mark.root


@pytest.fixture
def small_store(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted as the receiver's store; unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("disk-full test needs root to mount a tmpfs")
    store = tmp_path / "receiver-store"
    store.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(store)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield store
    finally:
        subprocess.run(["umount", "-l", str(store)], check=False)


async def test_disk_full_is_507_and_only_stored_bytes_count(tmp_path, small_store, session):
    # The creation fits (free space is checked then); something else fills the disk afterwards.
    data = os.urandom(MiB + MiB // 2)
    no_margin = Quotas(free_space_margin=0)
    async with running_receiver(tmp_path, store=small_store, quotas=no_margin) as receiver:
        tus = Tus(session, receiver.url)
        location = (await tus.create(len(data))).headers["Location"]
        upload_id = upload_id_of(location)
        half = MiB // 2
        assert (await tus.patch(location, 0, data[:half])).status == 204
        filler = small_store / "filler"
        filler.write_bytes(b"\0" * MiB)

        for checksum in ("sha256", None):  # verified or not, a chunk that does not fit is refused
            reply = await tus.patch(location, half, data[half:], checksum=checksum)
            assert reply.status == 507
            assert reply.offset == half
            assert (await tus.head(location)).offset == half
            assert partial_size(small_store, upload_id) == half  # truncated back: space freed

        # a chunk that fits still goes in; the stored prefix is intact
        reply = await tus.patch(location, half, data[half : half + MiB // 4])
        assert reply.status == 204
        stored = (small_store / "partial" / f"{upload_id}.bin").read_bytes()
        assert stored == data[: half + MiB // 4]

        # once there is room again the upload completes
        filler.unlink()
        reply = await tus.patch(location, half + MiB // 4, data[half + MiB // 4 :])
        assert reply.status == 204
        assert receiver.stored_bytes(upload_id) == data
