"""The optional compiled core (built when a C compiler is there, skipped when not), and the files
a wheel ships beside the code: examples/ and vm-images/ copied into tunlab/_shipped/."""

import shutil
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
SHIPPED = ("examples", "vm-images")  # found at run time by tunlab._shipped


class BuildWithShipped(build_py):
    """build_py, then examples/ and vm-images/ into the built package (not for editable installs,
    which find them in the checkout)."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        for kind in SHIPPED:
            source = HERE / kind
            if source.is_dir():
                target = Path(self.build_lib) / "tunlab" / "_shipped" / kind
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(
    cmdclass={"build_py": BuildWithShipped},
    ext_modules=[
        Extension(
            "tunlab.devices.offload._fast",
            sources=["tunlab/devices/offload/_fast.c"],
            optional=True,  # no compiler: a one-line notice at build time, never an error
            extra_compile_args=["-O2"] if __import__("sys").platform != "win32" else [],
        )
    ],
)
