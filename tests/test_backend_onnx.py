"""The ONNX Runtime backend, on a tiny model built in the test with onnx.helper (no torch)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.backends import Backend, backend_class
from edge.errors import BackendError

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from edge.backends.onnx import OnnxBackend  # noqa: E402  (after the skip above)


def _scale_model(path: Path, *, dynamic_batch: bool = True) -> Path:
    """images (N, 3, 4, 4) float32 -> embedding = 2 * images, flattened to (N, 48)."""
    h = onnx.helper
    batch = "N" if dynamic_batch else 1
    x = h.make_tensor_value_info("images", onnx.TensorProto.FLOAT, [batch, 3, 4, 4])
    y = h.make_tensor_value_info("embedding", onnx.TensorProto.FLOAT, [batch, 48])
    two = h.make_tensor("two", onnx.TensorProto.FLOAT, [], [2.0])
    graph = h.make_graph(
        [
            h.make_node("Mul", ["images", "two"], ["scaled"]),
            h.make_node("Flatten", ["scaled"], ["embedding"]),
        ],
        "scale",
        [x],
        [y],
        initializer=[two],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    return _scale_model(tmp_path / "model.onnx")


def test_run_returns_every_output_by_name_as_float32(model_path: Path) -> None:
    # given a loaded model with a dynamic batch axis
    backend = OnnxBackend(model_path, threads=1)
    x = np.random.default_rng(0).normal(size=(3, 3, 4, 4)).astype(np.float32)
    # when a batch of three runs
    out = backend.run(x)
    # then the output is there, float32, and computed by the model
    assert list(out) == ["embedding"] and out["embedding"].dtype == np.float32
    np.testing.assert_allclose(out["embedding"], 2 * x.reshape(3, -1), rtol=1e-6)


def test_load_reports_input_and_warms_up(model_path: Path) -> None:
    backend = OnnxBackend(model_path)
    assert backend.input_name == "images"
    assert backend.input_shape == ("N", 3, 4, 4)
    assert backend.warmup_ms > 0


def test_it_satisfies_the_backend_protocol_and_registry(model_path: Path) -> None:
    backend = OnnxBackend(model_path)
    assert isinstance(backend, Backend)
    assert backend_class("onnx") is OnnxBackend


def test_describe_says_what_runs_where(model_path: Path) -> None:
    info = OnnxBackend(model_path, threads=2).describe()
    assert info["backend"] == "onnx" and info["provider"] == "CPUExecutionProvider"
    assert info["threads"] == 2 and info["model"] == "model.onnx"
    assert info["outputs"] == ["embedding"]


def test_a_missing_file_is_a_backend_error_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(BackendError) as e:
        OnnxBackend(tmp_path / "absent.onnx")
    assert e.value.hint


def test_a_corrupt_file_is_a_backend_error_with_a_hint(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all")
    with pytest.raises(BackendError) as e:
        OnnxBackend(bad)
    assert "bad.onnx" in e.value.message and e.value.hint


def test_a_wrong_input_shape_is_a_backend_error(model_path: Path) -> None:
    backend = OnnxBackend(model_path)
    with pytest.raises(BackendError) as e:
        backend.run(np.zeros((1, 3, 5, 5), dtype=np.float32))
    assert "(1, 3, 5, 5)" in (e.value.hint or "")


def test_running_after_close_is_a_backend_error(model_path: Path) -> None:
    backend = OnnxBackend(model_path)
    backend.close()
    with pytest.raises(BackendError):
        backend.run(np.zeros((1, 3, 4, 4), dtype=np.float32))


def test_a_fixed_batch_model_warms_up_with_its_own_shape(tmp_path: Path) -> None:
    backend = OnnxBackend(_scale_model(tmp_path / "fixed.onnx", dynamic_batch=False))
    assert backend.input_shape == (1, 3, 4, 4)


def test_importing_the_backend_registry_does_not_import_onnxruntime() -> None:
    code = "import sys, edge.backends; sys.exit('onnxruntime' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
