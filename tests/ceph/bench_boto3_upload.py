"""Baseline for issue 15's closing note: plain boto3 uploading a 1 GiB file straight to RGW.

Not a test (pytest does not collect it): it starts its own single-node Ceph, big enough for the
data, uploads one file with boto3's managed transfer (multipart, 8 MiB parts) once per
concurrency given, checks the stored length, and prints MB/s (10^6 bytes per second).

    .venv/bin/python tests/ceph/bench_boto3_upload.py                 # 1 GiB, concurrency 1 and 10
    .venv/bin/python tests/ceph/bench_boto3_upload.py --size-mib 256 --concurrency 4 --memstore

Concurrency 10 is boto3's default; 1 is how a tus upload arrives (one PATCH after another).
The OSD is bluestore on a sparse file by default: memstore holds the data in the OSD's RAM at
~1.6x its size (3.2 GiB RSS for 2 GiB stored) and was no faster here.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.ceph import CephCluster, GiB

MiB = 1 << 20


def write_random_file(path: Path, size: int) -> None:
    with path.open("wb") as out:
        for _ in range(size // (8 * MiB)):
            out.write(os.urandom(8 * MiB))
        out.write(os.urandom(size % (8 * MiB)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--memstore", action="store_true", help="OSD data in RAM, not a file")
    args = parser.parse_args()
    size = args.size_mib * MiB
    # RGW's garbage collector frees nothing for hours, so every run's bytes stay in the OSD.
    capacity = size * len(args.concurrency) + 2 * GiB

    with tempfile.TemporaryDirectory(prefix="dockd-bench-") as scratch:
        source = Path(scratch) / "payload.bin"
        write_random_file(source, size)
        cluster = CephCluster(
            objectstore="memstore" if args.memstore else "bluestore", store_bytes=capacity
        )
        endpoint = cluster.start()
        print(f"ceph up in {cluster.timings['start_s']:.1f} s ({cluster.objectstore})")
        try:
            s3 = boto3.client(
                "s3",
                endpoint_url=endpoint.url,
                region_name=endpoint.region,
                aws_access_key_id=endpoint.access_key,
                aws_secret_access_key=endpoint.secret_key,
                config=Config(
                    s3={"addressing_style": "path"},
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                ),
            )
            s3.create_bucket(Bucket="bench")
            for concurrency in args.concurrency:
                transfer = TransferConfig(
                    multipart_threshold=8 * MiB,
                    multipart_chunksize=8 * MiB,
                    max_concurrency=concurrency,
                    use_threads=concurrency > 1,
                )
                key = f"payload-c{concurrency}"
                began = time.perf_counter()
                s3.upload_file(str(source), "bench", key, Config=transfer)
                seconds = time.perf_counter() - began
                stored = s3.head_object(Bucket="bench", Key=key)["ContentLength"]
                assert stored == size, f"stored {stored} bytes, sent {size}"
                print(
                    f"boto3 upload_file {args.size_mib} MiB, 8 MiB parts, concurrency "
                    f"{concurrency}: {seconds:.1f} s = {size / seconds / 1e6:.0f} MB/s"
                )
            rss = {name: f"{b / MiB:.0f} MiB" for name, b in cluster.rss_bytes().items()}
            print(f"daemon RSS after the uploads: {rss}")
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
