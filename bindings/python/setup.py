"""Bundles the native library into the package at build time.

The library is taken from ``GF_LIBRARY`` when set, else from ``target/release`` of the
checkout this directory belongs to; when it is not built yet, ``cargo build --release --lib``
builds it first. The wheel holds the library and no compiled Python code, so it is tagged
``py3-none-<platform>``. Importing the package needs no compiler.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools < 70.1
    from wheel.bdist_wheel import bdist_wheel

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

if sys.platform == "darwin":
    LIB_NAME = "libgrpc_failover.dylib"
elif sys.platform == "win32":
    LIB_NAME = "grpc_failover.dll"
else:
    LIB_NAME = "libgrpc_failover.so"


def crate_version() -> str:
    cargo = REPO / "Cargo.toml"
    if cargo.is_file():
        match = re.search(r'^version\s*=\s*"([^"]+)"', cargo.read_text(), re.MULTILINE)
        if match:
            return match.group(1)
    return "0.0.0"


def native_library() -> Path:
    env = os.environ.get("GF_LIBRARY")
    if env:
        path = Path(env)
        if not path.is_file():
            sys.exit(f"grpc-failover: GF_LIBRARY={env} is not a file")
        return path
    built = REPO / "target" / "release" / LIB_NAME
    if not built.is_file():
        if not (REPO / "Cargo.toml").is_file():
            sys.exit(
                f"grpc-failover: {built} not found and no checkout to build it from; "
                "set GF_LIBRARY to a built library"
            )
        print("grpc-failover: building the native library (cargo build --release --lib)")
        subprocess.check_call(["cargo", "build", "--release", "--lib"], cwd=REPO)
    return built


class BuildPyWithLibrary(build_py):
    def run(self):
        super().run()
        dest = Path(self.build_lib) / "grpc_failover" / "_lib"
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(native_library(), dest / LIB_NAME)


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
    cmdclass={"build_py": BuildPyWithLibrary, "bdist_wheel": PlatformWheel},
)
