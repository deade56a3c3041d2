"""Bundles the native library into the package at build time, stripped.

Where the library comes from, first match wins:

1. ``GF_LIBRARY``, a built library;
2. ``native/`` beside this file: the crate's sources (``cargo package`` of the checkout), which
   the sdist carries; built here with ``cargo build --release --lib --locked`` (needs cargo);
3. ``target/release`` of the checkout this directory belongs to (``make build``); when it is
   not built yet, ``cargo build --release --lib`` builds it first.

The wheel holds the library and no compiled Python code, so it is tagged ``py3-none-<platform>``;
``make wheel`` (scripts/wheel.sh) retags it manylinux with auditwheel. Importing the package needs
no compiler.
"""

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist
from setuptools.dist import Distribution

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools < 70.1
    from wheel.bdist_wheel import bdist_wheel

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
NATIVE = HERE / "native"

if sys.platform == "darwin":
    LIB_NAME = "libgrpc_failover.dylib"
elif sys.platform == "win32":
    LIB_NAME = "grpc_failover.dll"
else:
    LIB_NAME = "libgrpc_failover.so"


def crate_version() -> str:
    for cargo in (NATIVE / "Cargo.toml", REPO / "Cargo.toml"):
        if cargo.is_file():
            match = re.search(r'^version\s*=\s*"([^"]+)"', cargo.read_text(), re.MULTILINE)
            if match:
                return match.group(1)
    return "0.0.0"


def cargo_build(crate: Path, *extra: str) -> Path:
    """Builds the crate's library in release mode; returns the library's path."""
    cargo = shutil.which("cargo") or str(Path.home() / ".cargo" / "bin" / "cargo")
    target = Path(os.environ.get("CARGO_TARGET_DIR") or crate / "target")
    print(f"grpc-failover: building the native library in {crate} (cargo build --release --lib)")
    try:
        subprocess.check_call([cargo, "build", "--release", "--lib", *extra], cwd=crate)
    except FileNotFoundError:
        sys.exit("grpc-failover: building from source needs cargo (https://rustup.rs)")
    return target / "release" / LIB_NAME


def native_library() -> Path:
    env = os.environ.get("GF_LIBRARY")
    if env:
        path = Path(env)
        if not path.is_file():
            sys.exit(f"grpc-failover: GF_LIBRARY={env} is not a file")
        return path
    if (NATIVE / "Cargo.toml").is_file():
        # The client library only: gf-testserver's server dependencies are not built.
        return cargo_build(NATIVE, "--locked", "--no-default-features", "--features", "mimalloc")
    built = REPO / "target" / "release" / LIB_NAME
    if not built.is_file():
        if not (REPO / "Cargo.toml").is_file():
            sys.exit(
                f"grpc-failover: {built} not found and no sources to build it from; "
                "set GF_LIBRARY to a built library"
            )
        return cargo_build(REPO)
    return built


def strip(path: Path) -> None:
    """Drops the debug information and local symbols (the checkout's build keeps them for
    backtraces and valgrind; an installed package does not need them)."""
    tool = shutil.which("strip")
    if tool is None or sys.platform == "darwin":
        print("grpc-failover: no strip; the bundled library keeps its debug information")
        return
    subprocess.check_call([tool, "--strip-unneeded", str(path)])


class BuildPyWithLibrary(build_py):
    def run(self):
        super().run()
        dest = Path(self.build_lib) / "grpc_failover" / "_lib"
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(native_library(), dest / LIB_NAME)
        strip(dest / LIB_NAME)


class SdistWithSources(sdist):
    """Puts the crate (as ``cargo package`` lists it: sources, Cargo.toml, Cargo.lock, build.rs,
    the headers) under native/, so that the sdist builds the library with nothing else."""

    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        native = Path(base_dir) / "native"
        if native.exists():
            shutil.rmtree(native)
        if (NATIVE / "Cargo.toml").is_file():
            # An sdist made from an sdist: the sources are already here.
            shutil.copytree(NATIVE, native, ignore=shutil.ignore_patterns("target"))
            return
        if not (REPO / "Cargo.toml").is_file():
            sys.exit("grpc-failover: an sdist needs the crate's sources (a checkout)")
        cargo = shutil.which("cargo") or str(Path.home() / ".cargo" / "bin" / "cargo")
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.check_call(
                [cargo, "package", "--no-verify", "--allow-dirty", "--target-dir", tmp],
                cwd=REPO,
            )
            crate = next((Path(tmp) / "package").glob("*.crate"))
            with tarfile.open(crate) as tar:
                try:
                    tar.extractall(tmp, filter="data")
                except TypeError:  # Python without extraction filters (before 3.8.17)
                    tar.extractall(tmp)
            unpacked = Path(tmp) / crate.name[: -len(".crate")]
            shutil.copytree(unpacked, native)


class BinaryDistribution(Distribution):
    """Holds a native library: the wheel is platform-specific (and installs into platlib)."""

    def has_ext_modules(self):
        return True


class PlatformWheel(bdist_wheel):
    """No Python extension inside: any Python 3 on this platform can load the library."""

    def get_tag(self):
        _, _, platform = super().get_tag()
        return "py3", "none", platform


setup(
    version=crate_version(),
    distclass=BinaryDistribution,
    cmdclass={
        "build_py": BuildPyWithLibrary,
        "bdist_wheel": PlatformWheel,
        "sdist": SdistWithSources,
    },
)
