"""The optional compiled core: built when a C compiler is there, skipped (pure Python) when not."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "tunlab.devices.offload._fast",
            sources=["tunlab/devices/offload/_fast.c"],
            optional=True,  # no compiler: a one-line notice at build time, never an error
            extra_compile_args=["-O2"] if __import__("sys").platform != "win32" else [],
        )
    ]
)
