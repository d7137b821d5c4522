"""Building embedrt's kernel library: it compiles for the platforms it does not run on here, and a failed
build leaves no earlier library behind. (What the kernels compute is test_kernels.py.)"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest


@pytest.mark.parametrize("target", ["aarch64-linux-gnu", "aarch64-macos", "x86_64-macos"])
def test_the_library_compiles_for_arm_and_macos(target, tmp_path):
    """The library builds with clang (zig's, from PyPI) for Arm Linux and macOS, warning-free: no x86
    intrinsic escapes its guards and clang takes the target pragmas. It is not run there (the portable
    path it uses on Arm runs above, capped). Windows (MSVC) is not covered."""
    kernels_dir = Path(__file__).resolve().parents[1] / "runtime" / "kernels"
    out = tmp_path / "kernels.o"  # compiled, not linked: linking would first build libc++ for the target
    run = subprocess.run([sys.executable, "-m", "ziglang", "c++", "-target", target, "-std=c++17", "-O1", "-Wall",
                          "-Wextra", "-Werror", "-fvisibility=hidden", "-fPIC", "-c",
                          "-I", str(kernels_dir / "third_party" / "onnxruntime"), str(kernels_dir / "kernels.cc"),
                          "-o", str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    assert out.stat().st_size > 0


def test_a_failed_build_removes_the_library_an_earlier_build_left(tmp_path):
    """The library is optional, so a compile error is a warning; an editable install must not keep
    running the kernels of the build before it."""
    root = Path(__file__).resolve().parents[1]
    for name in ("setup.py", "pyproject.toml"):
        (tmp_path / name).write_bytes((root / name).read_bytes())
    (tmp_path / "runtime" / "kernels").mkdir(parents=True)
    (tmp_path / "runtime" / "kernels" / "kernels.cc").write_text("this is not C++\n")
    (tmp_path / "runtime" / "embedrt").mkdir()
    stale = tmp_path / "runtime" / "embedrt" / ("_kernels" + sysconfig.get_config_var("EXT_SUFFIX"))
    stale.write_bytes(b"an earlier build")
    built = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=tmp_path,
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-2000:]
    assert not stale.exists()
    assert "the kernel library failed to build; removed the earlier build" in built.stdout + built.stderr
