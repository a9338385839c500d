"""`make lock` and its check: every requirements lock compiled by uv from a short input file, with hashes.

``python -m dev.locks compile [--upgrade]`` recompiles every lock (keeping today's pins unless
``--upgrade``) and checks that the image's lock has cp311 wheels for Linux x86_64 and aarch64;
``python -m dev.locks check`` (offline, run by the tests) lists every lock that no longer matches its input.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
UV = Path(sys.executable).parent / "uv"
PYTHON_VERSION = "3.11"
# python:3.11-slim-bookworm has glibc 2.36; Fargate runs X86_64 and ARM64 (config key `architecture`).
IMAGE_PLATFORMS = ("x86_64-manylinux_2_28", "aarch64-manylinux_2_28")
FIX = "run `make lock`"


@dataclass(frozen=True)
class Lock:
    """One lock: the input file it is compiled from, the lock file, extra uv options."""

    input: str
    output: str
    options: tuple[str, ...] = ()


# In compile order: uv's; the app's lock takes the image's versions, the dev lock both (they share .venv with uv's).
UV_LOCK = Lock("requirements-uv.in", "requirements-uv.txt")
IMAGE = Lock("etl_job/requirements.in", "etl_job/requirements.txt")
APP = Lock("requirements.in", "requirements.txt")
DEV = Lock("requirements-dev.in", "requirements-dev.txt")
CHECKOV = Lock("requirements-checkov.in", "requirements-checkov.txt")
# LocalStack 4.12 breaks with releases after its own (FACTS.md): resolve as of that date.
LOCALSTACK = Lock("requirements-localstack.in", "requirements-localstack.txt", ("--exclude-newer", "2025-12-12"))
LOCKS = (UV_LOCK, IMAGE, APP, DEV, CHECKOV, LOCALSTACK)
# Locks installed into one environment, so a package they share must have one version.
SHARED_ENVIRONMENT = (UV_LOCK, IMAGE, APP, DEV)


@dataclass(frozen=True)
class Pin:
    """One package of a lock: its requirement line, whether it has hashes, and what asked for it."""

    requirement: Requirement
    hashed: bool
    via: tuple[str, ...]

    @property
    def version(self) -> str:
        return next(iter(self.requirement.specifier)).version


def compile_locks(root: Path = ROOT, upgrade: bool = False) -> None:
    """Recompile every lock with uv, then check the image's lock installs from wheels on both architectures."""
    for lock in LOCKS:
        command = [str(UV), "pip", "compile", "--quiet", "--universal", "--python-version", PYTHON_VERSION]
        command += ["--generate-hashes", "--no-strip-extras", "--custom-compile-command", "make lock", *lock.options]
        command += ["--upgrade"] if upgrade else []
        _compile_keeping_time(root / lock.output, [*command, lock.input, "-o", lock.output], root)
    for platform in IMAGE_PLATFORMS:
        # Wheels only, as the Dockerfile installs: fails naming any package without a wheel for the platform.
        check_wheels = [str(UV), "pip", "compile", "--quiet", "--python-platform", platform, "--python-version"]
        check_wheels += [PYTHON_VERSION, "--only-binary", ":all:", "--no-header", IMAGE.output]
        subprocess.run(check_wheels, cwd=root, check=True, stdout=subprocess.DEVNULL)


def _compile_keeping_time(output: Path, command: list[str], root: Path) -> None:
    """Run uv; a lock it rewrote unchanged keeps its time, so make does not reinstall the venvs built from it."""
    before = (output.read_bytes(), output.stat()) if output.exists() else None
    subprocess.run(command, cwd=root, check=True)
    if before and output.read_bytes() == before[0]:
        os.utime(output, ns=(before[1].st_atime_ns, before[1].st_mtime_ns))


def input_requirements(path: Path) -> Iterator[tuple[Path, Requirement]]:
    """The requirements of an input file and of the input files it includes (``-r``), with the file naming each."""
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip()
        if line.startswith("-r "):
            yield from input_requirements(path.parent / line[3:].strip())
        elif line and not line.startswith(("#", "-")):
            try:
                yield path, Requirement(line)
            except InvalidRequirement as error:
                raise SystemExit(f"locks: error: {path}:{number}: {error}") from None


def pins(path: Path) -> dict[str, list[Pin]]:
    """The packages a lock pins, by canonical name (a universal lock may pin one twice, under exclusive markers)."""
    found: dict[str, list[Pin]] = {}
    entries = path.read_text().split("\n")
    starts = [i for i, line in enumerate(entries) if line[:1].isalnum()]
    for start, end in zip(starts, [*starts[1:], len(entries)]):
        block = entries[start:end]
        requirement = Requirement(block[0].rstrip(" \\"))
        via = [line.strip("# ").removeprefix("via").strip() for line in block if line.lstrip().startswith("#")]
        pin = Pin(requirement, any("--hash=" in line for line in block), tuple(v for v in via if v))
        found.setdefault(canonicalize_name(requirement.name), []).append(pin)
    return found


def lock_problems(lock: Lock, locked: dict[str, list[Pin]], root: Path = ROOT) -> list[str]:
    """Why ``lock`` (its pins: ``locked``) no longer matches its input, one line each (nothing when it is current)."""
    wanted = [(str(source.relative_to(root)), requirement) for source, requirement in input_requirements(root / lock.input)]
    problems = [f"{lock.output}: {name} has no hashes" for name, found in locked.items() if not all(p.hashed for p in found)]
    for source, requirement in wanted:
        found = locked.get(canonicalize_name(requirement.name), [])
        versions = [p.version for p in found if p.requirement.extras == requirement.extras]
        if not any(requirement.specifier.contains(version, prereleases=True) for version in versions):
            pinned = ", ".join(str(p.requirement).split(";")[0] for p in found) or "nothing"
            problems.append(f"{lock.output}: {source} asks for {requirement}, the lock pins {pinned}")
    # uv marks what an input asked for with "via -r <input>"; anything else is pulled in.
    inputs = {f"-r {source}" for source, _ in wanted} | {f"-r {lock.input}"}
    direct = {name for name, found in locked.items() if any(via in inputs for p in found for via in p.via)}
    for name in sorted(direct - {canonicalize_name(requirement.name) for _, requirement in wanted}):
        problems.append(f"{lock.output}: pins {name} as a direct requirement, which {lock.input} no longer asks for")
    return problems


def shared_problems(locked: dict[str, dict[str, list[Pin]]]) -> list[str]:
    """Packages that locks installed into one environment pin at different versions (``locked``: pins by lock file)."""
    problems = []
    seen: dict[str, tuple[str, set[str]]] = {}
    for lock in SHARED_ENVIRONMENT:
        for name, found in sorted(locked[lock.output].items()):
            versions = {p.version for p in found}
            other, other_versions = seen.setdefault(name, (lock.output, versions))
            if other_versions != versions:
                problems.append(f"{lock.output} pins {name} {sorted(versions)}, {other} {sorted(other_versions)}")
    return problems


def problems(root: Path = ROOT) -> list[str]:
    """Every way the locks under ``root`` are stale, one line each."""
    missing = [f"{path} is missing" for lock in LOCKS for path in (lock.input, lock.output) if not (root / path).is_file()]
    if missing:
        return missing
    locked = {lock.output: pins(root / lock.output) for lock in LOCKS}  # each lock file parsed once
    return [line for lock in LOCKS for line in lock_problems(lock, locked[lock.output], root)] + shared_problems(locked)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dev.locks", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("compile", "check"))
    parser.add_argument("--upgrade", action="store_true", help="compile: take the newest releases the inputs allow")
    args = parser.parse_args(argv)
    if args.command == "compile":
        try:
            compile_locks(upgrade=args.upgrade)
        except subprocess.CalledProcessError as error:
            print(f"locks: error: uv failed (exit {error.returncode}) on: {' '.join(error.cmd)}", file=sys.stderr)
            return 1
    found = problems()
    for line in found:
        print(f"locks: stale: {line}; {FIX}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
