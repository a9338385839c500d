"""Run inside the job's container: prints, as JSON, who the process is and which writes work."""

import grp
import json
import os
import pwd
import sys
import tempfile


def writes(path: str) -> str:
    try:
        with open(path, "w") as file:
            file.write("x")
    except OSError as error:
        return type(error).__name__
    return "ok"


def temp_file() -> str:
    try:
        with tempfile.NamedTemporaryFile() as file:
            return "ok:" + file.name
    except OSError as error:  # FileNotFoundError: "No usable temporary directory found"
        return type(error).__name__


def name(lookup, number: int) -> str | None:
    try:
        return lookup(number)[0]
    except KeyError:
        return None


scratch = os.stat(sys.argv[1])
print(json.dumps({
    "uid": os.getuid(),
    "gid": os.getgid(),
    "groups": sorted(os.getgroups()),
    "user": name(pwd.getpwuid, os.getuid()),
    "group": name(grp.getgrgid, os.getgid()),
    "home": os.path.expanduser("~"),
    "scratch": [scratch.st_uid, scratch.st_gid, oct(scratch.st_mode & 0o7777)],
    "temp_file": temp_file(),
    "home_file": writes(os.path.expanduser("~/.probe")),
    "root_file": writes("/app/probe"),
    "job_files": sorted(os.listdir("/app/etl_job")),
}))
