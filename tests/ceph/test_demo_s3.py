"""`dockd demo --store s3:...` (scripts/demo-s3): the README's main job, on Ceph RGW.

Beyond the demo's own verdict, this reads RGW directly: every clip object is there with the
retention tag, the evidence clip (and only it) has a legal hold, and an independent age CLI
decrypts a stored object to the custody hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from dockd.receiver.storage.s3_config import S3Settings, make_client
from support.ceph import CephCluster

pytestmark = pytest.mark.ceph


def _legal_hold(client: Any, bucket: str, key: str) -> str:
    """ON or OFF; RGW 16.2 answers a version that never had a hold with
    ObjectLockConfigurationNotFoundError rather than OFF."""
    try:
        return str(client.get_object_legal_hold(Bucket=bucket, Key=key)["LegalHold"]["Status"])
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ObjectLockConfigurationNotFoundError":
            return "OFF"
        raise


def test_demo_on_rgw_verifies_tags_and_holds_the_evidence_clip(
    ceph: CephCluster, tmp_path: Path
) -> None:
    ceph.ensure_rgw()
    endpoint = ceph.endpoint
    assert endpoint is not None
    bucket = f"demo-{secrets.token_hex(4)}"
    env = dict(
        os.environ,
        AWS_ACCESS_KEY_ID=endpoint.access_key,
        AWS_SECRET_ACCESS_KEY=endpoint.secret_key,
    )
    workdir = tmp_path / "demo"
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "dockd.cli", "demo", "--workdir", str(workdir)),
            *("--store", f"s3:{endpoint.url}/{bucket}"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "ALL VERIFIED" in proc.stdout
    assert not list((workdir / "bays").rglob("*.MP4"))  # every clip wiped from the cameras

    client = make_client(S3Settings.from_spec(f"s3:{endpoint.url}/{bucket}", environ=env))
    try:
        sidecars = [
            o["Key"]
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])
            if o["Key"].endswith(".json")
        ]
        records = [
            json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read()) for key in sidecars
        ]
        clips = [r for r in records if "manifest_for" not in r["metadata"]]
        assert len(clips) == 8
        held = []
        for record in clips:
            key = f"clips/{record['upload']}"
            tags = {
                t["Key"]: t["Value"]
                for t in client.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
            }
            hold = _legal_hold(client, bucket, key)
            evidence = record["metadata"].get("evidence") == "true"
            assert tags.get("retention") == ("evidence" if evidence else "routine"), tags
            assert (hold == "ON") == evidence
            if evidence:
                held.append(record["upload"])
        assert len(held) == 1  # the demo docks exactly one evidence-flagged clip

        # An independent age implementation decrypts what RGW holds to the custody hash.
        age = shutil.which("age")
        if age is None:
            pytest.skip("needs the age CLI (scripts/setup --test)")
        record = max(clips, key=lambda r: r["length"])
        body = client.get_object(Bucket=bucket, Key=f"clips/{record['upload']}")["Body"].read()
        plain = subprocess.run(
            [age, "-d", "-i", str(workdir / "identity.txt")],
            input=body,
            capture_output=True,
            check=True,
        ).stdout
        assert hashlib.sha256(plain).hexdigest() == record["metadata"]["sha256"]
    finally:
        client.close()
