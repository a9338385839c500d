"""`make image`'s set-up decisions that need no Docker: which Debian mirror, which base image."""

from pathlib import Path

import pytest

from dev.image import SetupError, base_image, debian_mirror

DEB822 = """\
Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://off.example/debian
Suites: bookworm
Enabled: no

Types: deb
# a comment line
URIs: http://mirror.example/debian/
Suites: bookworm bookworm-updates
Components: main
"""


def test_the_mirror_is_the_first_enabled_binary_source_for_bookworm(tmp_path: Path) -> None:
    (tmp_path / "debian.sources").write_text(DEB822)
    (tmp_path / "other.sources.disabled").write_text("Types: deb\nURIs: http://ignored.example\nSuites: bookworm\n")
    assert debian_mirror([tmp_path / "sources.list", tmp_path]) == "http://mirror.example/debian"


def test_one_line_sources_are_read_too(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text(
        "# deb http://commented.example/debian bookworm main\n"
        "deb-src http://src.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://one.example/debian bookworm main\n"
    )
    assert debian_mirror([tmp_path / "sources.list", tmp_path / "sources.list.d"]) == "http://one.example/debian"


def test_no_bookworm_source_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text("deb http://old.example/debian bullseye main\n")
    with pytest.raises(SetupError, match=r"no apt source for Debian bookworm .*add one"):
        debian_mirror([tmp_path / "sources.list"])


def test_the_base_image_is_the_one_every_from_line_names(tmp_path: Path) -> None:
    assert base_image() == "python:3.11.13-slim-bookworm"
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM python:3.11-slim AS b\nFROM python:3.12-slim\n")
    with pytest.raises(SetupError, match="expected one base image"):
        base_image(dockerfile)
