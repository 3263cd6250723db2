"""The one compiled part of cardedge: the detector's decode (edge/recognize/_obb.c). Everything else is in
pyproject.toml. The extension is optional: where no C compiler is found the install goes on
without it, and edge.recognize.detect runs the same decode in numpy."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "edge.recognize._obb",
            sources=["edge/recognize/_obb.c"],
            # C11 and no fused multiply-adds: float32 results bit for bit as numpy's
            extra_compile_args=["-O2", "-std=c11", "-ffp-contract=off"],
            optional=True,
        )
    ]
)
