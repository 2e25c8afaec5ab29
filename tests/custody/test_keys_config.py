"""The dock key from keygen to config, the station's officer table, and the wire metadata."""

import stat

import pytest
from dockd import config, pipeline
from dockd.app import StartupError, load_credentials
from dockd.crypto.keys import keygen
from dockd.custody import attest
from dockd.journal import ClipRecord, State
from support.dock import dock_config, settings_from, write_toml


def test_keygen_writes_the_dock_signing_pair(tmp_path):
    result = keygen(tmp_path)
    assert result.dock_signing_key == tmp_path / "dock-signing.key"
    assert stat.S_IMODE(result.dock_signing_key.stat().st_mode) == 0o600
    assert result.dock_public_key.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert result.dock_public_key in result.files()


def _settings(tmp_path, **dock):
    keys = keygen(tmp_path / "keys")
    data = dock_config(
        tmp_path,
        "http://127.0.0.1:1/files/",
        keys.age_recipient.read_text().strip(),
        public_key=keys.server_public_key,
    )
    data["dock"].update(dock)
    return keys, data


def test_signing_key_is_optional_and_loaded_when_given(tmp_path):
    keys, data = _settings(tmp_path)
    assert load_credentials(settings_from(tmp_path, data)).dock_key is None
    data["dock"]["signing_key"] = str(keys.dock_signing_key)
    settings = settings_from(tmp_path, data)
    assert settings.dock.signing_key == keys.dock_signing_key
    assert load_credentials(settings).dock_key is not None


def test_a_readable_signing_key_is_refused_at_startup(tmp_path):
    keys, data = _settings(tmp_path)
    keys.dock_signing_key.chmod(0o644)
    data["dock"]["signing_key"] = str(keys.dock_signing_key)
    with pytest.raises(StartupError, match=r"dock-signing\.key.*chmod 600"):
        load_credentials(settings_from(tmp_path, data))


def test_officer_table_parses_and_names_bad_entries(tmp_path):
    _, data = _settings(tmp_path)
    data["officers"] = {"CAM-0001": "PC 4711"}
    assert settings_from(tmp_path, data).officers == {"CAM-0001": "PC 4711"}
    data["officers"] = {"CAM-0001": 7}
    with pytest.raises(config.ConfigError, match=r"officers\.CAM-0001: must be a string"):
        config.load(write_toml(tmp_path / "bad.toml", data))


def _confirmed_clip(metadata):
    return ClipRecord(
        id=1,
        camera="CAM-0001",
        model="m",
        bay="bay-1",
        rel_path=b"DCIM/A.MP4",
        size=1,
        mtime_ns=1,
        dev=1,
        ino=1,
        session="s",
        state=State.CONFIRMED,
        reason=None,
        retry_at=None,
        attempts=0,
        evidence=True,
        recorded_at="2026-01-01T00:00:00Z",
        recorded_at_source="mtime",
        metadata=metadata,
        plaintext_sha256="a" * 64,
        ciphertext_sha256="b" * 64,
        ciphertext_length=200,
        age_header=b"h",
        upload_url="http://s/files/abc",
        confirmation={"policy": "receipt", "receipt": "v1.x.y", "at": "2026-01-01T00:00:05+00:00"},
        held_from=None,
        discovered_at=0.0,
        updated_at=0.0,
    )


def test_station_officer_outranks_what_the_camera_says(tmp_path):
    _, data = _settings(tmp_path)
    data["officers"] = {"CAM-0001": "PC 4711"}
    settings = settings_from(tmp_path, data)
    ctx = pipeline.PipelineContext(settings, None, None, None, None)  # type: ignore[arg-type]
    clip = _confirmed_clip({"officer": "PC 1", "category": "incident"})
    facts = attest.facts(ctx, clip, (3, "c" * 64))
    assert (facts.officer, facts.officer_source) == ("PC 4711", "station")
    assert facts.upload_id == "abc" and facts.confirmed_at == 1767225605.0
    ctx.settings = settings_from(tmp_path, {**data, "officers": {}})
    facts = attest.facts(ctx, clip, (3, "c" * 64))
    assert (facts.officer, facts.officer_source) == ("PC 1", "camera")
    wire = pipeline.wire_metadata(clip, "dock-1")
    assert wire["category"] == "incident" and wire["evidence"] == "true"
