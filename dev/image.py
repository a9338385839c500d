"""`make image`: build the job's image with Docker, first setting up what a fresh machine lacks (idempotent).

Steps, each skipped when already done: install docker.io and debootstrap (apt), start dockerd, build
a stand-in for the Dockerfile's base image from Debian packages (no image registry is reachable
here), then ``docker build --network host`` of etl_job/. Needs root for the first three steps.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
JOB_DIR = ROOT / "etl_job"
IMAGE_TAG = "etl-pipeline-job:local"
# docker.io's own client: another docker CLI on PATH may be newer than the daemon and need buildx.
DOCKER = "/usr/bin/docker"
DOCKERD_LOG = Path("/var/log/etl-pipeline-dockerd.log")
DOCKERD_START_SECONDS = 60
# overlay2 copies nothing per layer or container; vfs (a full copy each time, ~4x slower here) works everywhere.
STORAGE_DRIVERS = ("overlay2", "vfs")
DEBIAN_SUITE = "bookworm"
BASE_PACKAGES = ("python3.11", "python3.11-venv", "ca-certificates")
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))


class SetupError(Exception):
    """A step that cannot be done here; the message names it and the fix."""


def say(message: str) -> None:
    print(f"image: {message}", flush=True)


def _run(command: list[str], what: str, **kwargs: Any) -> None:
    """Run a step; its output is shown only when it fails (the last 20 lines), then one error line."""
    kwargs.setdefault("stdout", subprocess.PIPE)
    try:
        done = subprocess.run(command, stderr=subprocess.STDOUT, **kwargs)
    except FileNotFoundError as error:
        raise SetupError(f"{what}: {command[0]} is not installed") from error
    if done.returncode != 0:
        output = (done.stdout or b"").decode(errors="replace").splitlines()
        print("\n".join(output[-20:]), file=sys.stderr)
        raise SetupError(f"{what} failed (exit {done.returncode}): {' '.join(command)}")


def _quiet(command: list[str]) -> bool:
    """Whether the command succeeds (output discarded)."""
    try:
        return subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
    except FileNotFoundError:
        return False


def base_image(dockerfile: Path = JOB_DIR / "Dockerfile") -> str:
    """The one base image every FROM line of the Dockerfile names."""
    bases = {line.split()[1] for line in dockerfile.read_text().splitlines() if line.startswith("FROM ")}
    if len(bases) != 1:
        raise SetupError(f"{dockerfile}: expected one base image in its FROM lines, found {sorted(bases)}")
    return bases.pop()


def _source_entries(text: str, deb822: bool) -> Iterable[tuple[str, list[str]]]:
    """(URI, suites) pairs of the binary ('deb') entries of one apt sources file."""
    if deb822:
        for stanza in re.split(r"\n\s*\n", text):
            fields = {}
            for line in stanza.splitlines():
                if ":" in line and not line.startswith(("#", " ")):
                    key, value = line.split(":", 1)
                    fields[key.strip().lower()] = value.split()
            if "deb" in fields.get("types", []) and fields.get("enabled", ["yes"]) != ["no"]:
                for uri in fields.get("uris", []):
                    yield uri, fields.get("suites", [])
        return
    for line in text.splitlines():
        words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
        if len(words) >= 3 and words[0] == "deb":
            yield words[1], [words[2]]


def debian_mirror(sources: Iterable[Path] = APT_SOURCES, suite: str = DEBIAN_SUITE) -> str:
    """The Debian mirror this machine's apt uses for ``suite`` (from /etc/apt/sources.list*)."""
    files: list[Path] = []
    for source in sources:
        files += sorted(source.glob("*.list")) + sorted(source.glob("*.sources")) if source.is_dir() else [source]
    for file in files:
        if file.is_file():
            for uri, suites in _source_entries(file.read_text(), deb822=file.suffix == ".sources"):
                if suite in suites:
                    return uri.rstrip("/")
    raise SetupError(f"no apt source for Debian {suite} in /etc/apt/sources.list*; add one (e.g. deb.debian.org)")


def ensure_packages() -> None:
    """Install docker.io and debootstrap with apt-get unless their commands exist."""
    if Path(DOCKER).exists() and shutil.which("dockerd") and shutil.which("debootstrap"):
        return
    if os.geteuid() != 0:
        raise SetupError("docker.io and debootstrap are missing and installing them needs root: run as root")
    say("installing docker.io and debootstrap (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "update", "-qq"], "apt-get update", env=env)
    _run(["apt-get", "install", "-y", "-qq", "docker.io", "debootstrap"], "apt-get install", env=env)


def ensure_daemon() -> None:
    """Start dockerd in the background unless a daemon answers: overlay2 storage where it works, else vfs."""
    if _quiet([DOCKER, "info"]):
        return
    if os.geteuid() != 0:
        raise SetupError("no Docker daemon answers and starting one needs root: run as root")
    for driver in STORAGE_DRIVERS:
        say(f"starting dockerd ({driver} storage, no bridge network), log in {DOCKERD_LOG}")
        with DOCKERD_LOG.open("ab") as log:
            daemon = subprocess.Popen(
                ["dockerd", f"--storage-driver={driver}", "--iptables=false", "--ip6tables=false", "--bridge=none"],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # outlives make
            )
        if _answers(daemon):
            return
    raise SetupError(f"dockerd would not start with any of {', '.join(STORAGE_DRIVERS)} storage; read {DOCKERD_LOG}")


def _answers(daemon: subprocess.Popen) -> bool:
    """Whether the daemon answers; False if it exited (e.g. its storage driver does not work here)."""
    deadline = time.monotonic() + DOCKERD_START_SECONDS
    while not _quiet([DOCKER, "info"]):
        if daemon.poll() is not None:
            return False
        if time.monotonic() > deadline:
            raise SetupError(f"dockerd (pid {daemon.pid}) did not answer within {DOCKERD_START_SECONDS} s; read {DOCKERD_LOG}")
        time.sleep(1)
    return True


def _host_apt_settings() -> str:
    """The host apt's Acquire settings a chroot needs to reach the same mirror (proxy, snapshot dates)."""
    dump = subprocess.run(["apt-config", "dump"], capture_output=True, text=True).stdout
    wanted = re.compile(r"^Acquire::(Check-Valid-Until|Check-Date|https?::Proxy)\b")
    return "".join(line + "\n" for line in dump.splitlines() if wanted.match(line))


def _chroot(rootfs: Path, *command: str) -> None:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
    _run(["chroot", str(rootfs), *command], f"in the base image chroot, {command[0]}", env=env)


def build_base(tag: str) -> None:
    """Build ``tag`` from Debian packages: a minimal bookworm with Python 3.11 where the official image has it."""
    mirror = debian_mirror()
    say(f"building the stand-in base image {tag} from Debian {DEBIAN_SUITE} at {mirror} (~2 min)")
    with tempfile.TemporaryDirectory(prefix="etl-base-", dir="/var/tmp") as tmp:
        rootfs = Path(tmp) / "rootfs"
        _run(["debootstrap", "--variant=minbase", DEBIAN_SUITE, str(rootfs), mirror], "debootstrap")
        (rootfs / "etc/apt/apt.conf.d/90host").write_text(_host_apt_settings())
        # debootstrap's --include cannot resolve python3.11-venv's distutils dependency; apt can.
        _chroot(rootfs, "apt-get", "update", "-qq")
        _chroot(rootfs, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *BASE_PACKAGES)
        _chroot(rootfs, "apt-get", "clean")
        shutil.rmtree(rootfs / "var/lib/apt/lists", ignore_errors=True)
        (rootfs / "usr/local/bin/python").symlink_to("/usr/bin/python3.11")
        shutil.copyfile(CA_BUNDLE, rootfs / CA_BUNDLE.lstrip("/"))
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        _run([DOCKER, "import", "--change", f"ENV PIP_CERT={CA_BUNDLE}", "-", tag], "docker import", stdin=tar.stdout)
        tar.wait()


def ensure_base() -> None:
    """Build the stand-in base image unless Docker already has an image of that name."""
    tag = base_image()
    if not _quiet([DOCKER, "image", "inspect", tag]):
        build_base(tag)


def build_image(tag: str = IMAGE_TAG) -> None:
    """``docker build`` etl_job/ as ``tag`` (cached layers make a rebuild take seconds)."""
    say(f"building {tag} from {JOB_DIR.relative_to(ROOT)}/")
    _run([DOCKER, "build", "--network", "host", "-t", tag, str(JOB_DIR)], "docker build")


def ensure_image(tag: str = IMAGE_TAG) -> str:
    """Everything `make image` does; returns the image tag."""
    ensure_packages()
    ensure_daemon()
    ensure_base()
    build_image(tag)
    return tag


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dev.image", description=__doc__.splitlines()[0])
    parser.add_argument("--tag", default=IMAGE_TAG, help=f"the image's tag (default {IMAGE_TAG})")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        ensure_image(args.tag)
    except SetupError as error:
        print(f"image: error: {error}", file=sys.stderr)
        return 1
    say(f"{args.tag} ready ({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
