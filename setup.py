"""The one compiled part of cardedge: the detector's decode (edge/_obb.c). Everything else is in
pyproject.toml. The extension is optional: where no C compiler is found the install goes on
without it, and edge.detect runs the same decode in numpy."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "edge._obb",
            sources=["edge/_obb.c"],
            # C11 and no fused multiply-adds: float32 results bit for bit as numpy's
            extra_compile_args=["-O2", "-std=c11", "-ffp-contract=off"],
            optional=True,
        )
    ]
)
