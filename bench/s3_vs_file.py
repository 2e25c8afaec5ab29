"""1 GiB through `dockd serve` into RGW, into the file store, and boto3 straight to RGW, in one run.

    .venv/bin/python bench/s3_vs_file.py [--size-mib 1024] [--chunk-mib 8] [--memstore]

Starts its own single-node Ceph (tests/support/ceph.py; the OSD on bluestore in a sparse file by
default, as tests/ceph/bench_boto3_upload.py does) and reports its start time. Then, with the same
random source file:

* tus-js-client 4.3.1 -> `dockd serve --store s3:...` (8 MiB PATCHes, 8 MiB parts): the S3 store;
* tus-js-client -> `dockd serve --store DIR` on the machine's disk: the file store;
* boto3 `upload_file` straight to RGW, 8 MiB parts, one at a time (as a tus upload arrives) and
  with boto3's default 10 threads: what RGW itself takes;
* the re-read a restart would need if hash state were not saved: a streamed GET of the stored
  object, hashed (only possible for a completed object: see storage/s3_hash.py);
* the two SHA-256 implementations on 256 MiB in memory (hashlib vs resumablesha256).

Every stored copy is checked against the source's SHA-256 after timing. Prints MB/s (10^6 B/s)
and ratios; the machine is shared, so compare figures from the same run only.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from boto3.s3.transfer import TransferConfig
from resumablesha256 import sha256 as resumable_sha256

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from dockd.receiver.storage.s3_config import S3Settings, make_client  # noqa: E402
from support.ceph import CephCluster, GiB  # noqa: E402
from support.node_peers import install_node_peers, run_tus_js_upload  # noqa: E402
from support.receiver import ReceiverProcess, read_sidecar, upload_id_of  # noqa: E402

MiB = 1 << 20


def write_random_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as out:
        remaining = size
        while remaining:
            piece = os.urandom(min(8 * MiB, remaining))
            digest.update(piece)
            out.write(piece)
            remaining -= len(piece)
    return digest.hexdigest()


def mb_per_s(size: int, seconds: float) -> float:
    return size / seconds / 1e6


def sync_disk() -> None:
    """Flush what the last step left dirty, so its writeback does not slow the next one."""
    os.sync()


class S3Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.size = args.size_mib * MiB
        self.chunk = args.chunk_mib * MiB
        self.workdir = workdir
        self.source = workdir / "source.bin"
        self.sha256 = ""
        self.results: dict[str, Any] = {}
        self.cluster = CephCluster(
            objectstore="memstore" if args.memstore else "bluestore",
            # RGW frees nothing for hours: room for the three copies uploaded, plus slack.
            store_bytes=4 * self.size + 2 * GiB,
        )

    def run(self) -> dict[str, Any]:
        install_node_peers()
        self.sha256 = write_random_file(self.source, self.size)
        sync_disk()
        endpoint = self.cluster.start()
        self.results["ceph start (s)"] = round(self.cluster.timings["start_s"], 1)
        self.results["objectstore"] = self.cluster.objectstore
        try:
            settings = S3Settings.from_spec(
                f"s3:{endpoint.url}/bench-evidence",
                region=endpoint.region,
                part_size=self.chunk,
                environ={
                    "AWS_ACCESS_KEY_ID": endpoint.access_key,
                    "AWS_SECRET_ACCESS_KEY": endpoint.secret_key,
                },
            )
            self.through_dockd_to_s3(settings)
            sync_disk()
            self.through_dockd_to_file()
            sync_disk()
            self.boto3_straight(settings, threads=1)
            self.boto3_straight(settings, threads=10)
            self.reread(settings)
        finally:
            self.cluster.stop()
        self.hash_speeds()
        return self.results

    def _record(self, name: str, seconds: float, ok: bool) -> None:
        rate = mb_per_s(self.size, seconds)
        self.results[name] = {"MB/s": round(rate, 1), "seconds": round(seconds, 2), "ok": ok}
        print(f"  {name:<42} {rate:8.1f} MB/s  ({seconds:.2f} s){'' if ok else '  WRONG'}")

    def _credentials(self, settings: S3Settings) -> Path:
        path = self.workdir / "s3.credentials"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(
                f"aws_access_key_id = {settings.access_key}\n"
                f"aws_secret_access_key = {settings.secret_key}\n"
            )
        return path

    def through_dockd_to_s3(self, settings: S3Settings) -> None:
        args = [
            "--store",
            f"s3:{settings.endpoint_url}/{settings.bucket}",
            "--s3-credentials",
            str(self._credentials(settings)),
            "--s3-region",
            settings.region,
            "--s3-part-size",
            str(self.chunk),
        ]
        with ReceiverProcess(self.workdir / "serve-s3", extra_args=args) as server:
            report = run_tus_js_upload(server.url, self.source, chunk_size=self.chunk)
        upload = upload_id_of(report["url"])
        client = make_client(settings)
        digest = hashlib.sha256()
        body = client.get_object(Bucket=settings.bucket, Key=f"clips/{upload}")["Body"]
        while piece := body.read(8 * MiB):
            digest.update(piece)
        ok = report["completed"] and digest.hexdigest() == self.sha256
        self._record("dockd serve -> RGW (S3 store)", report["seconds"], ok)

    def through_dockd_to_file(self) -> None:
        with ReceiverProcess(self.workdir / "serve-file") as server:
            report = run_tus_js_upload(server.url, self.source, chunk_size=self.chunk)
            sidecar = read_sidecar(server.store, upload_id_of(report["url"]))
        ok = report["completed"] and sidecar["sha256"] == self.sha256
        self._record("dockd serve -> file store", report["seconds"], ok)

    def boto3_straight(self, settings: S3Settings, *, threads: int) -> None:
        client = make_client(settings)
        bucket = "bench-boto3"
        if threads == 1:
            client.create_bucket(Bucket=bucket)
        config = TransferConfig(
            multipart_threshold=self.chunk,
            multipart_chunksize=self.chunk,
            max_concurrency=threads,
            use_threads=threads > 1,
        )
        key = f"straight-{threads}"
        began = time.perf_counter()
        client.upload_file(str(self.source), bucket, key, Config=config)
        seconds = time.perf_counter() - began
        ok = client.head_object(Bucket=bucket, Key=key)["ContentLength"] == self.size
        self._record(f"boto3 -> RGW, {threads} thread{'s' if threads > 1 else ''}", seconds, ok)

    def reread(self, settings: S3Settings) -> None:
        """A streamed GET + SHA-256 of the 1 GiB object: the rejected "re-read after restart"."""
        client = make_client(settings)
        began = time.perf_counter()
        digest = hashlib.sha256()
        body = client.get_object(Bucket="bench-boto3", Key="straight-1")["Body"]
        while piece := body.read(8 * MiB):
            digest.update(piece)
        self._record(
            "re-read from RGW + SHA-256 (GET)",
            time.perf_counter() - began,
            digest.hexdigest() == self.sha256,
        )

    def hash_speeds(self) -> None:
        data = os.urandom(256 * MiB)
        for name, make in (
            ("hashlib sha256", hashlib.sha256),
            ("resumablesha256", resumable_sha256),
        ):
            hasher = make()
            began = time.perf_counter()
            for start in range(0, len(data), MiB):
                hasher.update(data[start : start + MiB])
            rate = mb_per_s(len(data), time.perf_counter() - began)
            self.results[f"{name} (MB/s, 1 MiB updates)"] = round(rate)
            print(f"  {name:<42} {rate:8.1f} MB/s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--chunk-mib", type=int, default=8)
    parser.add_argument("--memstore", action="store_true", help="OSD data in RAM, not a file")
    args = parser.parse_args(argv)
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="dockd-s3-bench-") as scratch:
        results = S3Bench(args, Path(scratch)).run()
    s3 = results["dockd serve -> RGW (S3 store)"]["MB/s"]
    file = results["dockd serve -> file store"]["MB/s"]
    straight = results["boto3 -> RGW, 1 thread"]["MB/s"]
    print(f"ceph start: {results['ceph start (s)']} s ({results['objectstore']})")
    print(
        f"S3 store / file store: {s3 / file:.2f}; S3 store / boto3 (1 thread): {s3 / straight:.2f}"
    )
    print(f"load average after: {os.getloadavg()}")
    return 0 if all(v.get("ok", True) for v in results.values() if isinstance(v, dict)) else 1


if __name__ == "__main__":
    raise SystemExit(main())
