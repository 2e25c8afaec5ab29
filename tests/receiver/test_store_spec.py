"""`dockd serve --store`: a directory or file:DIR is the file store, s3:URL/BUCKET the S3 store;
any other scheme is refused by name before anything is created (a `gs:bucket` directory would
silently take evidence), and so is an S3 store that is not safely configured."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dockd import exitcodes
from dockd.receiver.storage import open_store
from dockd.receiver.storage.file import FileStore
from dockd.receiver.storage.s3 import S3Store
from dockd.receiver.storage.s3_config import load_credentials_file


@pytest.mark.parametrize("spec", ["{d}", "file:{d}"])
def test_directory_or_file_scheme_is_the_file_store(tmp_path: Path, spec: str) -> None:
    store = open_store(spec.format(d=tmp_path / "store"))
    assert isinstance(store, FileStore) and store.root == tmp_path / "store"


def _serve(
    tmp_path: Path, store: str, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "dockd.cli",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--allow-anonymous",
            "--store",
            store,
            *extra,
            "--signing-key",
            str(tmp_path / "missing.key"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_unknown_scheme_is_refused_and_creates_nothing(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dockd.cli",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--allow-anonymous",
            "--store",
            "gs:evidence-bucket",
            "--signing-key",
            str(tmp_path / "missing.key"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "'gs'" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_s3_store_spec_is_parsed_with_its_options(tmp_path: Path) -> None:
    store = open_store(
        "s3:http://127.0.0.1:7480/evidence",
        s3_options={"environ": {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"}},
    )
    assert isinstance(store, S3Store)
    assert (store.settings.bucket, store.settings.work_bucket) == ("evidence", "evidence-work")
    assert store.describe() == "s3:http://127.0.0.1:7480/evidence (work bucket evidence-work)"


@pytest.mark.parametrize(
    ("store", "says"),
    [
        ("s3:evidence-bucket", "s3:http(s)://HOST[:PORT]/BUCKET"),
        ("s3:http://192.0.2.10:7480/evidence", "--allow-plaintext"),
        ("s3:http://127.0.0.1:7480/Not_A_Bucket", "not a valid S3 bucket name"),
    ],
)
def test_a_bad_s3_store_is_refused_with_exit_78(tmp_path: Path, store: str, says: str) -> None:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"}
    proc = _serve(tmp_path, store, env=env)
    assert proc.returncode == exitcodes.CONFIG, proc.stderr
    assert says in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_s3_credentials_readable_by_others_are_refused_in_one_line(tmp_path: Path) -> None:
    credentials = tmp_path / "s3.credentials"
    credentials.write_text("aws_access_key_id = a\naws_secret_access_key = b\n")
    credentials.chmod(0o640)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = _serve(
        tmp_path,
        "s3:http://127.0.0.1:7480/evidence",
        "--s3-credentials",
        str(credentials),
        env=env,
    )
    assert proc.returncode == exitcodes.CONFIG
    assert proc.stderr.count("\n") == 1 and "chmod 600" in proc.stderr, proc.stderr
    credentials.chmod(0o600)
    assert load_credentials_file(credentials) == ("a", "b")


def test_s3_store_without_credentials_is_refused(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = _serve(tmp_path, "s3:http://127.0.0.1:7480/evidence", env=env)
    assert proc.returncode == exitcodes.CONFIG
    assert "AWS_ACCESS_KEY_ID" in proc.stderr
