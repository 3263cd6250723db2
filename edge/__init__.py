"""cardedge device runtime. Imports no torch, no onnxruntime, no hardware library at import time."""

__version__ = "0.1.0"
