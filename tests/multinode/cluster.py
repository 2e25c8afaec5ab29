"""Three `dockd serve` nodes over one S3 store (Ceph RGW) and one PostgreSQL, behind HAProxy.

`Cluster` starts them for one test: a fresh evidence bucket and a fresh database, one shared
receipt-signing key (docs/SCALE.md: the nodes share it), a short lease so takeovers happen within
a test's patience, and HAProxy round-robin in front. Everything is stopped by PID.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from dockd.receiver.storage.s3 import S3Store
from dockd.receiver.storage.s3_config import S3Settings, make_client
from support.ceph import CephCluster
from support.haproxy import HAProxy
from support.postgres import PostgresServer
from support.receiver import ReceiverProcess
from support.stores import rgw_settings

MiB = 1 << 20
PART = 5 * MiB  # S3's smallest part but the last; the store's part size in these tests
LEASE_SECONDS = 3.0


def _private(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return path


@dataclass
class Cluster:
    workdir: Path
    ceph: CephCluster
    postgres: PostgresServer
    nodes: list[ReceiverProcess] = field(default_factory=list)
    settings: S3Settings | None = None
    dsn: str = ""
    proxy: HAProxy | None = None
    client: Any = None

    def start(self, count: int = 3, extra_args: tuple[str, ...] = ()) -> Cluster:
        self.ceph.ensure_rgw()
        assert self.ceph.endpoint is not None
        self.settings = rgw_settings(self.ceph.endpoint, part_size=PART)
        self.client = make_client(self.settings)
        S3Store(self.settings, client=self.client).recover()  # both buckets, before any node
        self.dsn = self.postgres.create_database("mn")
        credentials = _private(
            self.workdir / "s3.credentials",
            f"aws_access_key_id = {self.settings.access_key}\n"
            f"aws_secret_access_key = {self.settings.secret_key}\n",
        )
        dsn_file = _private(self.workdir / "shared-state.dsn", self.dsn + "\n")
        self.nodes = [ReceiverProcess(self.workdir / f"node{i + 1}") for i in range(count)]
        signing_key = self.nodes[0].signing_key_path  # one key for every node
        # The proxy's port is chosen now, so nodes can name it as their public origin.
        self.proxy = HAProxy([], check_interval_ms=500)
        for index, node in enumerate(self.nodes):
            node.extra_args = [
                "--store",
                f"s3:{self.settings.endpoint_url}/{self.settings.bucket}",
                "--s3-credentials",
                str(credentials),
                "--s3-region",
                self.settings.region,
                "--s3-part-size",
                str(PART),
                "--signing-key",
                str(signing_key),
                "--shared-state",
                str(dsn_file),
                "--node-id",
                f"node{index + 1}",
                "--lease-seconds",
                str(LEASE_SECONDS),
                "--public-origin",
                self.proxy.origin,
                *extra_args,
            ]
            node.start(timeout=60)
        self.proxy.backends = [f"127.0.0.1:{node.port}" for node in self.nodes]
        self.proxy.start()
        return self

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
        for node in self.nodes:
            if node.process is not None:
                node.process.kill()  # also a SIGSTOPped one
                node.process.wait()
                node.process = None

    @property
    def url(self) -> str:
        assert self.proxy is not None
        return self.proxy.url

    @property
    def public_key(self) -> Any:
        return self.nodes[0].public_key

    def object_bytes(self, upload: str) -> bytes:
        assert self.settings is not None
        reply = self.client.get_object(Bucket=self.settings.bucket, Key=f"clips/{upload}")
        return bytes(reply["Body"].read())

    def lease_holders(self) -> dict[str, str]:
        """upload -> node for every lease held now."""
        with psycopg.connect(self.dsn, connect_timeout=3) as conn:
            rows = conn.execute(
                "SELECT upload, holder FROM dockd_upload_lease"
                " WHERE holder IS NOT NULL AND lease_until > clock_timestamp()"
            ).fetchall()
        return {str(upload): str(holder) for upload, holder in rows}

    def committed_offset(self, upload: str) -> int | None:
        with psycopg.connect(self.dsn, connect_timeout=3) as conn:
            row = conn.execute(
                "SELECT upload_offset FROM dockd_upload_state WHERE upload = %s", (upload,)
            ).fetchone()
        return None if row is None else int(row[0])

    def multipart_id(self, upload: str) -> str:
        with psycopg.connect(self.dsn, connect_timeout=3) as conn:
            row = conn.execute(
                "SELECT state->>'multipart_id' FROM dockd_upload_state WHERE upload = %s",
                (upload,),
            ).fetchone()
        assert row is not None, upload
        return str(row[0])

    def log_events(self, node: ReceiverProcess) -> list[dict[str, Any]]:
        events = []
        for line in node.log_text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                events.append(event)
        return events

    def patches_by_node(self, upload: str) -> dict[str, int]:
        """How many PATCHes of `upload` each node answered 204, from the nodes' own logs."""
        counts: dict[str, int] = {}
        for index, node in enumerate(self.nodes):
            name = f"node{index + 1}"
            counts[name] = sum(
                1
                for event in self.log_events(node)
                if event.get("event") == "request"
                and event.get("method") == "PATCH"
                and event.get("status") == 204
                and str(event.get("path", "")).endswith(upload)
            )
        return counts
