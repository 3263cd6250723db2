"""cardedge device runtime. Imports no torch, no onnxruntime, no hardware library at import time."""

import os
import sys

# The runtime's own numpy work is small (a frame's few vectors against the catalogue), and the
# cores belong to ONNX Runtime and OpenCV, which size their own threads. OpenBLAS's worker threads
# busy-wait after every product and would take those cores from the next frame, so one BLAS
# thread unless the user set it. The variable is read when numpy loads: it takes effect where
# edge is imported first (the cardedge commands and the service).
_user_blas_threads = os.environ.get("OPENBLAS_NUM_THREADS")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# Whether numpy's BLAS runs on one thread in this process (edge.recognize.index relies on it).
SINGLE_THREAD_BLAS = _user_blas_threads == "1" or (
    _user_blas_threads is None and "numpy" not in sys.modules
)

__version__ = "0.1.0"
