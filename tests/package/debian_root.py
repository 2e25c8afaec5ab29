"""A fresh Debian 12 root to install the package into: debootstrap, chroot, bind mounts.

The root is made by debootstrap from the mirror this machine's apt already uses (read from its
sources at run time, never written down here). The pristine root is cached as a tarball in the
git-ignored .cache/package/ for a week, so a second run unpacks it instead of bootstrapping
again; without the cache (a fresh machine, CI) it is bootstrapped from nothing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SUITE = "bookworm"
REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "package"
CACHE_MAX_AGE_S = 7 * 24 * 3600
APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))


def debian_mirror() -> str:
    """The Debian archive URI of this machine's apt sources (one-line or deb822 format)."""
    files: list[Path] = []
    for source in APT_SOURCES:
        if source.is_file():
            files.append(source)
        elif source.is_dir():
            files.extend(sorted(source.glob("*.list")) + sorted(source.glob("*.sources")))
    for path in files:
        text = path.read_text(errors="replace")
        # deb822 stanzas: URIs + Suites naming the release itself (not -security, not -updates).
        for stanza in re.split(r"\n\s*\n", text):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.MULTILINE)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.MULTILINE)
            if uris and suites and SUITE in suites.group(1).split():
                return uris.group(1)
        for line in text.splitlines():
            fields = line.split("#", 1)[0].split()
            if fields[:1] == ["deb"]:
                fields = [f for f in fields[1:] if not f.startswith("[")]
                if len(fields) >= 2 and fields[1] == SUITE:
                    return fields[0]
    raise RuntimeError(f"no apt source for Debian {SUITE} in {', '.join(map(str, APT_SOURCES))}")


def make_root(root: Path, timings: dict[str, float]) -> None:
    """Fill the empty directory ROOT with a minimal Debian 12, from the cache when it is fresh."""
    arch = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()
    tarball = CACHE / f"debootstrap-{SUITE}-minbase-{arch}.tar"
    started = time.monotonic()
    if tarball.is_file() and time.time() - tarball.stat().st_mtime < CACHE_MAX_AGE_S:
        subprocess.run(["tar", "-C", str(root), "-xpf", str(tarball)], check=True)
        timings["debootstrap_cached_s"] = time.monotonic() - started
        return
    subprocess.run(
        ["debootstrap", "--variant=minbase", SUITE, str(root), debian_mirror()],
        check=True,
        capture_output=True,
        timeout=1200,
    )
    timings["debootstrap_s"] = time.monotonic() - started
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_suffix(f".partial-{os.getpid()}")  # concurrent runs: one file each
    subprocess.run(["tar", "-C", str(root), "-cpf", str(partial), "."], check=True)
    partial.replace(tarball)


def mounts_below(root: Path) -> list[str]:
    """Mount points at or below ROOT, from the kernel's own table."""
    prefix = str(root.resolve())
    with open("/proc/self/mounts") as table:
        points = [line.split()[1].replace("\\040", " ") for line in table]
    return [p for p in points if p == prefix or p.startswith(prefix + "/")]


@contextmanager
def fresh_root(timings: dict[str, float]) -> Iterator[Path]:
    """A fresh Debian 12 root with its own /proc and /sys mounted; unmounted and deleted after.

    /dev is not bind-mounted: debootstrap made the few device nodes the root needs, so nothing
    of the host's /dev is ever reachable from a directory that gets deleted. The root lives in a
    private directory, not pytest's tmp_path, which other pytest sessions of the same user prune
    while this one may still have it mounted.
    """
    root = Path(tempfile.mkdtemp(prefix="dockd-debian12-", dir="/var/tmp"))
    try:
        make_root(root, timings)
        shutil.copyfile("/etc/resolv.conf", root / "etc" / "resolv.conf")
        with _mounted(root):
            yield root
    finally:
        left = mounts_below(root)
        if left:  # never delete through a mount: leave it for a human, say where
            raise RuntimeError(f"still mounted, not deleted: {left}")
        shutil.rmtree(root)


@contextmanager
def _mounted(root: Path) -> Iterator[None]:
    mounts: list[Path] = []
    try:
        for fstype, target in (("proc", root / "proc"), ("sysfs", root / "sys")):
            subprocess.run(["mount", "-t", fstype, fstype, str(target)], check=True)
            mounts.append(target)
        yield
    finally:
        for target in reversed(mounts):
            if subprocess.run(["umount", str(target)], check=False).returncode != 0:
                subprocess.run(["umount", "--lazy", str(target)], check=False)


def chroot(
    root: Path, *argv: str, check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run ARGV inside ROOT, as root, with a plain environment; output captured as text."""
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "DEBIAN_FRONTEND": "noninteractive",
        "LANG": "C.UTF-8",
        "HOME": "/root",
    }
    done = subprocess.run(
        ["chroot", str(root), *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited {done.returncode}\n"
            f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
        )
    return done


def can_chroot() -> str | None:
    """Why the package tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root (debootstrap, chroot, mount)"
    return None
