"""cardedge device runtime. Imports no torch, no onnxruntime, no hardware library at import time."""

import os

# The runtime's own numpy work is small (a frame's few vectors against the catalogue), and the
# cores belong to ONNX Runtime and OpenCV, which size their own threads. OpenBLAS's worker threads
# busy-wait after every product and would take those cores from the next frame, so one BLAS
# thread unless the user set it. Takes effect where numpy is imported after edge: the cardedge
# commands and the service.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
