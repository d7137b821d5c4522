"""Builds embedrt's ONNX Runtime kernel library (``runtime/kernels``); everything else is in pyproject.toml.

The library is an ordinary shared object that ONNX Runtime loads by path, never a Python module. It
is optional: without a C++17 compiler the install still succeeds, and the runtime says so and runs
the portable graphs (see ``embedrt/kernels.py``).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension(
    "embedrt._kernels",
    sources=["runtime/kernels/rowwise_ops.cc"],
    include_dirs=["runtime/kernels/third_party/onnxruntime"],
    language="c++",
    extra_compile_args=["-std=c++17", "-O3", "-fvisibility=hidden"],
    optional=True,
)])
