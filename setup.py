"""Builds embedrt's ONNX Runtime kernel library (``runtime/kernels``); everything else is in pyproject.toml.

The library is an ordinary shared object that ONNX Runtime loads by path, never a Python module. It
is optional: without a C++17 compiler the install still succeeds, and the runtime says so and runs
the portable graphs (see ``embedrt/kernels.py``).
"""

from pathlib import Path

from setuptools import Extension, setup

# kernels.cc includes the other files of runtime/kernels: a change to any of them rebuilds the library.
KERNEL_PARTS = sorted(str(p) for p in Path("runtime/kernels").glob("*") if p.suffix in (".h", ".inc"))

setup(ext_modules=[Extension(
    "embedrt._kernels",
    sources=["runtime/kernels/kernels.cc"],
    depends=KERNEL_PARTS,
    include_dirs=["runtime/kernels/third_party/onnxruntime"],
    language="c++",
    extra_compile_args=["-std=c++17", "-O3", "-fvisibility=hidden"],
    optional=True,
)])
