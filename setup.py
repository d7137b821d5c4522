"""Builds embedrt's ONNX Runtime kernel library (``runtime/kernels``); everything else is in pyproject.toml.

The library is an ordinary shared object that ONNX Runtime loads by path, never a Python module. It
is optional: without a C++17 compiler the install still succeeds, and the runtime says so and runs
the portable graphs (see ``embedrt/kernels.py``).
"""

from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# kernels.cc includes the other files of runtime/kernels: a change to any of them rebuilds the library.
KERNEL_PARTS = sorted(str(p) for p in Path("runtime/kernels").glob("*") if p.suffix in (".h", ".inc"))


class BuildKernels(build_ext):
    """build_ext that deletes the library an earlier build left when this one fails: an editable install
    would otherwise keep running the old kernels (without the ops the new exporter writes) as if the
    build had worked. The failure itself stays a warning, as the extension is optional."""

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception:
            package = self.get_finalized_command("build_py").get_package_dir(ext.name.rpartition(".")[0])
            filename = Path(self.get_ext_filename(ext.name)).name
            for stale in {Path(self.get_ext_fullpath(ext.name)), Path(package) / filename}:
                if stale.is_file():
                    stale.unlink()
                    print(f"WARNING: the kernel library failed to build; removed the earlier build {stale}")
            raise


setup(cmdclass={"build_ext": BuildKernels}, ext_modules=[Extension(
    "embedrt._kernels",
    sources=["runtime/kernels/kernels.cc"],
    depends=KERNEL_PARTS,
    include_dirs=["runtime/kernels/third_party/onnxruntime"],
    language="c++",
    extra_compile_args=["-std=c++17", "-O3", "-fvisibility=hidden"],
    optional=True,
)])
