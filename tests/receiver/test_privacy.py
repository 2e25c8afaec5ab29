"""Personal data stays out of the logs (UK DPA 2018 / GDPR): an officer's name, in the camera's
sidecar and in the clip's folder name, reaches the server's sidecar (where it belongs) but no
INFO-level log line of the dock or the server. Logs identify clips by id and camera serial.

Real processes on loopback: `dockd serve` with a token and `dockd run` with JSON logs.
"""

from __future__ import annotations

import asyncio
import json

from dockd.crypto.keys import keygen
from support.dock import (
    DaemonProcess,
    dock_config,
    journal_rows,
    make_bay,
    stored_objects,
    wait_for,
    write_toml,
)
from support.receiver import ReceiverProcess

OFFICER = "Jane Doe-Okonkwo"
FOLDER = "PC_Jane_Doe-Okonkwo"  # body-worn cameras often file clips under the wearer's name
SERIAL = "CAM-PRIV-01"
TOKEN = "tok-test-dock-0123456789abcdef"


def _lines_naming_the_officer(text: str) -> list[dict]:
    found = []
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if any(part in line for part in ("Jane", "Okonkwo")):
            found.append(event)
    return found


async def test_an_officers_name_is_in_no_info_log_line_of_the_dock_or_the_server(tmp_path):
    keys = keygen(tmp_path / "keys")
    clip = f"DCIM/{FOLDER}/CLIP0001.MP4"
    with ReceiverProcess(tmp_path / "rx", tokens={TOKEN: "test-dock"}) as server:
        data = dock_config(
            tmp_path,
            server.url,
            (tmp_path / "keys" / "recipient.txt").read_text().strip(),
            public_key=server.public_key_path,
        )
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN + "\n")
        token_file.chmod(0o600)
        data["server"]["token_file"] = str(token_file)
        (tmp_path / "bays").mkdir()
        daemon = DaemonProcess(write_toml(tmp_path / "dockd.toml", data), tmp_path / "dock.log")
        daemon.start()
        try:
            await asyncio.to_thread(daemon.wait_ready)
            make_bay(
                tmp_path / "bays",
                "bay-1",
                SERIAL,
                {clip: 64 * 1024},
                sidecars={f"DCIM/{FOLDER}/CLIP0001.json": {"officer": OFFICER}},
            )
            # A second camera names its officer in the bay identity file instead of a sidecar.
            staging = tmp_path / "staging-2"
            (staging / "DCIM" / FOLDER).mkdir(parents=True)
            (staging / "DCIM" / FOLDER / "CLIP0002.MP4").write_bytes(b"\x01" * 4096)
            (staging / "camera.json").write_text(
                json.dumps({"serial": SERIAL + "-2", "model": "cam", "officer": OFFICER})
            )
            staging.rename(tmp_path / "bays" / "bay-2")
            await wait_for(
                lambda: (
                    len([r for r in journal_rows(tmp_path / "state") if r["state"] == "WIPED"]) == 2
                ),
                60,
                what="both clips to be offloaded and wiped",
            )
        finally:
            daemon.terminate()
        server_log = server.log_text()
    del keys

    # The name did travel: it is evidence metadata, kept in the server's sidecar.
    stored = [o for o in stored_objects(server.store) if "manifest_for" not in o["metadata"]]
    assert sorted(o["metadata"]["officer"] for o in stored) == [OFFICER, OFFICER]
    assert clip in {o["metadata"]["path"] for o in stored}

    dock_log = daemon.log_path.read_text()
    for side, text in (("dock", dock_log), ("server", server_log)):
        info = [e for e in _lines_naming_the_officer(text) if e.get("level") in ("debug", "info")]
        assert info == [], f"{side} logs personal data at INFO: {info[:3]}"
    # ...while the logs still say which clip of which camera went where.
    events = [json.loads(line) for line in dock_log.splitlines() if line.startswith("{")]
    wiped = [e for e in events if e.get("event") == "clip.wiped"]
    assert {e["camera"] for e in wiped} == {SERIAL, SERIAL + "-2"}
    assert all("clip" in e for e in wiped)
    # (a one-pass clip's creation with metadata is its final upload: "upload.concatenated")
    created = [
        json.loads(x)
        for x in server_log.splitlines()
        if '"upload.created"' in x or '"upload.concatenated"' in x
    ]
    assert any(e.get("camera") == SERIAL for e in created)
