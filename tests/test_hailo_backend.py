"""HailoBackend against the hailo_platform test double (real ONNX compute, 8-bit quantisation).

Tests marked `hailo` need a real device and are skipped elsewhere by tests/conftest.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.config import HailoSettings
from edge.errors import BackendError, BackendTimeoutError, BackendUnavailableError
from edge.recognize.embed import preprocess
from edge.recognize.obb_head import decode_head, raw_detector_output
from tests import hailo_helpers as hh

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def hp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    mod = hh.load_fake_hailo(monkeypatch)
    yield mod
    from edge.backends import hailo

    while hailo._shared["refs"] > 0:
        hailo.release_vdevice()
    hh.unload_fake_hailo()


@pytest.fixture
def bundle(tmp_path: Path, hp: Any) -> tuple[Path, Any, Any]:
    emb, det = hh.build_hailo_bundle(tmp_path)
    return tmp_path, emb, det


def _backend(bundle: tuple[Path, Any, Any], role: str = "embedder", **kw: Any) -> Any:
    from edge.backends.hailo import HailoBackend

    root, emb, det = bundle
    spec = emb if role == "embedder" else det
    return HailoBackend.from_spec(role, spec, root, HailoSettings(**kw))


def _onnx(path: Path, x: np.ndarray, names: list[str] | None = None) -> list[np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(names, {"images": x})


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_embedder_on_the_double_matches_onnx_within_quantisation(bundle: Any) -> None:
    # given five crops and the float ONNX reference
    root, emb, _ = bundle
    crops = hh.calib_pixels(5, hh.EMB_H, hh.EMB_W, seed=3)
    x = preprocess(crops, emb.input)
    ref = _onnx(root / "embedder.onnx", x)[0]
    backend = _backend(bundle)
    # when the Hailo backend runs the normalised batch the ONNX path would feed
    out = backend.run(x)["embedding"]
    # then shapes agree and every embedding has cosine >= 0.99 to ONNX (8-bit input and output)
    assert out.shape == ref.shape == (5, hh.EMB_D)
    assert out.dtype == np.float32
    assert _cos(out, ref).min() >= 0.99


def test_uint8_outputs_dequantised_on_the_host_equal_float32_outputs(bundle: Any) -> None:
    # given the same crops through FLOAT32 (HailoRT dequantises) and UINT8 (host dequantises)
    crops = hh.calib_pixels(3, hh.EMB_H, hh.EMB_W, seed=4)
    as_float = _backend(bundle, output_format="float32").run(crops)["embedding"]
    as_uint8 = _backend(bundle, output_format="uint8").run(crops)["embedding"]
    # then (q - zero_point) * scale on the host reproduces HailoRT's values
    np.testing.assert_allclose(as_uint8, as_float, rtol=0, atol=1e-6)


def test_uint8_nhwc_pixels_and_normalised_tensor_give_the_same_result(bundle: Any) -> None:
    _, emb, _ = bundle
    crops = hh.calib_pixels(2, hh.EMB_H, hh.EMB_W, seed=5)
    backend = _backend(bundle)
    # when fed raw pixels or the ONNX path's tensor
    # then the chip sees the same pixels
    np.testing.assert_array_equal(
        backend.run(crops)["embedding"], backend.run(preprocess(crops, emb.input))["embedding"]
    )


def test_crops_are_batched_in_chunks_of_max_batch(bundle: Any, hp: Any) -> None:
    # given six crops and max_batch 4
    backend = _backend(bundle)
    hp.fake_state.jobs.clear()
    # when run
    out = backend.run(hh.calib_pixels(6, hh.EMB_H, hh.EMB_W))["embedding"]
    # then two device jobs ran, of 4 and 2 frames, and six embeddings came back
    assert [n for _, n in hp.fake_state.jobs] == [4, 2]
    assert out.shape == (6, hh.EMB_D)


def test_detector_returns_the_nine_head_outputs_that_decode_to_the_full_graph(bundle: Any) -> None:
    # given a frame and the cut ONNX graph's float outputs decoded on the host
    root, _, det = bundle
    frame = hh.calib_pixels(1, hh.DET, hh.DET, seed=6)
    x = preprocess(frame, det.input)
    names = [n.split("/", 1)[1] for n in det.hef.output_names]
    ref = decode_head(_onnx(root / "detector.onnx", x, names), layout="NCHW")
    # when the Hailo backend runs it and its outputs are decoded as the Detector does
    out = _backend(bundle, role="detector").run(x)
    raw = raw_detector_output(out, det)
    # then the chip's nine outputs came back, and decode to the ONNX shape with boxes within
    # 2 px and scores within 0.02 (8-bit outputs)
    assert set(out) == set(det.hef.output_names)
    assert raw.shape == ref.shape == (1, 6, 64 + 16 + 4)
    np.testing.assert_allclose(raw[:, :4], ref[:, :4], atol=2.0)
    np.testing.assert_allclose(raw[:, 4], ref[:, 4], atol=0.02)


def test_uint8_pixels_go_to_the_chip_as_they_are(bundle: Any, hp: Any) -> None:
    # given the Hailo backend, which normalises inside the compiled model
    from edge.recognize.embed import pixel_spec, takes_pixels

    _, emb, _ = bundle
    backend = _backend(bundle)
    frames = hh.calib_pixels(2, hh.EMB_H, hh.EMB_W, seed=4)
    # when the pipeline's one preprocessing prepares pixels for it
    pixels = preprocess(frames, pixel_spec(emb.input))
    # then they are the frames themselves (RGB model), and give the normalised tensor's result
    assert takes_pixels(backend)
    assert pixels.dtype == np.uint8 and pixels.shape == frames.shape
    np.testing.assert_array_equal(pixels, frames)
    np.testing.assert_array_equal(
        backend.run(pixels)["embedding"], backend.run(preprocess(frames, emb.input))["embedding"]
    )


def test_models_share_one_vdevice_with_round_robin(bundle: Any, hp: Any) -> None:
    # when detector and embedder load in one process
    a = _backend(bundle)
    b = _backend(bundle, role="detector")
    # then one VDevice was opened, with the ROUND_ROBIN scheduler
    assert hp.fake_state.vdevices_created == 1
    params = hp.fake_state.vdevice_params[0]
    assert params.scheduling_algorithm == hp.HailoSchedulingAlgorithm.ROUND_ROBIN
    assert params.multi_process_service is False
    a.close()
    b.close()


def test_closing_the_last_model_releases_the_device(bundle: Any, hp: Any) -> None:
    a = _backend(bundle)
    b = _backend(bundle, role="detector")
    # when both close
    a.close()
    assert hp.fake_state.live_vdevices == 1
    b.close()
    # then the VDevice is released
    assert hp.fake_state.live_vdevices == 0


def test_multi_process_service_joins_the_shared_group(bundle: Any, hp: Any) -> None:
    _backend(bundle, multi_process_service=True, group_id="SHARED")
    params = hp.fake_state.vdevice_params[0]
    assert params.multi_process_service is True
    assert params.group_id == "SHARED"


def test_timeout_raises_typed_error_and_restarts_the_model(bundle: Any, hp: Any) -> None:
    # given a job that never completes
    backend = _backend(bundle, timeout_ms=100)
    hp.fake_state.hang_next = 1
    crops = hh.calib_pixels(1, hh.EMB_H, hh.EMB_W)
    # when run, then a BackendTimeoutError, not zeros
    with pytest.raises(BackendTimeoutError):
        backend.run(crops)
    # and the model was restarted and works again
    assert backend.restarts == 1
    assert np.abs(backend.run(crops)["embedding"]).sum() > 0


def test_device_error_status_becomes_backend_error(bundle: Any, hp: Any) -> None:
    backend = _backend(bundle)
    hp.fake_state.fail_next = 1
    with pytest.raises(BackendError):
        backend.run(hh.calib_pixels(1, hh.EMB_H, hh.EMB_W))


def test_device_busy_in_another_process_says_how_to_share(bundle: Any, hp: Any) -> None:
    hp.fake_state.busy_other_process = True
    with pytest.raises(BackendUnavailableError) as e:
        _backend(bundle)
    assert "multi_process_service" in (e.value.hint or "")


def test_driver_mismatch_says_to_reinstall_matching_versions(bundle: Any, hp: Any) -> None:
    hp.fake_state.driver_version = "4.20.0"
    with pytest.raises(BackendUnavailableError) as e:
        _backend(bundle)
    assert "hailo-all" in (e.value.hint or "")


def test_hailo8_hef_on_hailo8l_device_is_refused(tmp_path: Path, hp: Any) -> None:
    from edge.backends.hailo import HailoBackend

    emb, _ = hh.build_hailo_bundle(tmp_path, arch="hailo8")
    with pytest.raises(BackendUnavailableError) as e:
        HailoBackend.from_spec("embedder", emb, tmp_path, HailoSettings())
    assert "compile-hef" in (e.value.hint or "")


def test_to_device_pixels_inverts_the_onnx_preprocessing_exactly() -> None:
    from edge.backends.hailo import to_device_pixels

    spec = hh.embedder_spec().input
    crops = hh.calib_pixels(3, hh.EMB_H, hh.EMB_W, seed=9)
    np.testing.assert_array_equal(to_device_pixels(preprocess(crops, spec), spec), crops)


@pytest.mark.hailo
def test_real_device_embedder_runs(tmp_path: Path) -> None:
    """On a real Hailo host: the same backend opens the device (needs a real HEF via env)."""
    hef = os.environ.get("CARDEDGE_TEST_EMBEDDER_HEF")
    if not hef:
        pytest.skip("set CARDEDGE_TEST_EMBEDDER_HEF to a compiled embedder HEF")
    from edge.backends.hailo import HailoBackend

    spec = hh.embedder_spec()
    backend = HailoBackend(
        Path(hef), input_spec=spec.input, settings=HailoSettings(), output_name="embedding"
    )
    shape = backend.input_shape
    out = backend.run(np.zeros(shape, np.uint8))
    backend.close()
    assert np.isfinite(out["embedding"]).all()
