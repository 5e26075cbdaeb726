"""Wheels carried to a machine that cannot install from a registry (``benchmarks/gpu.sh``). Standard library only.

``python -m benchmarks._wheels download`` (here, with network): the pure-Python and small binary packages that
kdtune's one-configuration training needs besides torch and NumPy, at the versions installed here, for
CPython 3.11-3.14 on x86-64 Linux, into ``benchmarks/wheels/`` (git-ignored). ``... install DIR TARGET`` (there):
unpacks into TARGET (put it on PYTHONPATH) each carried package that is missing or older than the carried one,
choosing the wheel that fits the running interpreter; nothing needs pip.
"""

from __future__ import annotations

import argparse
import platform
import re
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

# distribution -> import name
CARRIED = {"pydantic": "pydantic", "pydantic-core": "pydantic_core", "annotated-types": "annotated_types",
           "typing-inspection": "typing_inspection", "typing-extensions": "typing_extensions", "PyYAML": "yaml",
           "packaging": "packaging"}
PYTHONS = ("3.11", "3.12", "3.13", "3.14")
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")
WHEEL = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl$")


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", text)[:3])


def download(directory: Path, pythons: tuple[str, ...] = PYTHONS) -> None:
    """``pip download`` of each carried distribution, pinned to the installed version, for each Python."""
    directory.mkdir(parents=True, exist_ok=True)
    pins = [f"{dist}=={metadata.version(dist)}" for dist in CARRIED]
    platforms = [arg for plat in PLATFORMS for arg in ("--platform", plat)]
    for python in pythons:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "--python-version", python, "--implementation", "cp", *platforms, "-d", str(directory),
                        *pins], check=True)
    total = sum(p.stat().st_size for p in directory.glob("*.whl"))
    print(f"{len(list(directory.glob('*.whl')))} wheels, {total / 2**20:.1f} MiB in {directory}")


def fits(filename: str) -> int:
    """How well a wheel fits this interpreter: 0 not at all, 1 pure Python, 2 stable ABI, 3 this CPython."""
    match = WHEEL.match(filename)
    if match is None:
        return 0
    major, minor = sys.version_info[:2]
    py, abi, plat = (match[k].split(".") for k in ("py", "abi", "plat"))
    if "any" not in plat and not any("linux" in p and p.endswith(platform.machine()) for p in plat):
        return 0
    if f"cp{major}{minor}" in abi:
        return 3
    if "abi3" in abi and any(re.fullmatch(rf"cp{major}(\d+)", p) and int(p[3:]) <= minor for p in py):
        return 2
    if "none" in abi and any(p in (f"py{major}", f"py{major}{minor}") for p in py):
        return 1
    return 0


def install(directory: Path, target: Path) -> list[str]:
    """Unpack into ``target`` each carried distribution that is missing here or older; returns 'name version'."""
    best: dict[str, tuple[int, Path]] = {}
    for wheel in sorted(directory.glob("*.whl")):
        score = fits(wheel.name)
        name = _key(wheel.name.split("-")[0])
        if score and score > best.get(name, (0, wheel))[0]:
            best[name] = (score, wheel)
    done = []
    for dist in CARRIED:
        if _key(dist) not in best:
            continue
        wheel = best[_key(dist)][1]
        carried = wheel.name.split("-")[1]
        try:
            if _version(metadata.version(dist)) >= _version(carried):
                continue
        except metadata.PackageNotFoundError:
            pass
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(target)
        done.append(f"{dist} {carried}")
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._wheels", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    down = sub.add_parser("download", help="fetch the wheels (needs a registry)")
    down.add_argument("--dir", type=Path, default=Path("benchmarks/wheels"))
    down.add_argument("--python", default=",".join(PYTHONS), help="Python versions, comma-separated")
    put = sub.add_parser("install", help="unpack the fitting wheels of missing or older packages")
    put.add_argument("dir", type=Path)
    put.add_argument("target", type=Path)
    args = parser.parse_args(argv)
    if args.command == "download":
        download(args.dir, tuple(v.strip() for v in args.python.split(",") if v.strip()))
        return 0
    done = install(args.dir, args.target)
    print(f"carried wheels unpacked into {args.target}: {', '.join(done) if done else 'none needed'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
