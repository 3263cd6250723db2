"""The issue-7 bar: the live loop on the Hailo test double at published Hailo-8L latencies.

Bar: live fps >= 0.9 x min(camera fps, accelerator bound) with 4 cards per frame, where the
accelerator bound is 1000 / (detector ms + cards x embedder ms per crop) frames per second.
Published Hailo-8L figures: detector (YOLO11n-OBB) about 6.4 ms per frame; embedder per crop
from the bundle manifest's embedder HEF `latency_ms`, else --embed-ms (default 3 ms).

What runs: a copy of the bundle gets a detector graph cut before the head's concat
(training.hailo_compile.cut_detector_onnx), fake HEFs for both models (the test double's own
format, tests/fakes/hailo_platform/hef_tool.py) and their HefSpec entries; the Recognizer loads
it with runtime.backend = "hailo" against the `hailo_platform` double (tests/fakes on sys.path),
so the real Hailo backend code runs: uint8 NHWC input, quantised outputs, host OBB-head decode,
crops of a frame batched into one job. edge.live.bench.bench_live then drives edge.live.loop.LiveLoop
on a camera paced at --fps that films 1280x720 scenes of --cards cards (edge.cli.bench's compositor,
drifting slowly so tracking works; a new scene every --scene-seconds), or any edge source URI.

Device time: the double computes real outputs with ONNX Runtime on this CPU before it "holds the
chip" for its configured latency. On this 2-core machine that compute (20-40 ms per detector
frame) is slower than the chip it stands for and takes the cores the host pipeline needs, so by
default the camera plays a looping clip (--clip-seconds of a slowly swaying scene, seamless at
the loop) and the chip is memoised: each distinct input tensor is computed once with the real
graph (the clip is pushed through the Recognizer once before timing starts) and every repeat is
answered from the memo, bit-identical. The double's remaining per-job cost (a hash per input) is
measured, and the latency set to published - that cost, so a job occupies the emulated chip for
the published time while every host stage (decode, letterbox, quantisation, OBB-head decode,
NMS, rectify, batching, search, tracking) runs for real. --clip-seconds 0 films an endless
drifting scene instead, without memo hits: then the emulated chip is as slow as this CPU, the
report says so and gives the bound for the emulated device too.

    python benchmarks/hailo_live.py --bundle models/demo --seconds 20

Without --bundle and without models/demo the tiny random-weight test bundle is built; its
detector finds no cards, so the run exercises the loop but cannot measure the 4-card bar (the
report says so under bar.measurable).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import json
import logging
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
import numpy.typing as npt

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make edge/, training/ and tests/ importable
    sys.path.insert(0, str(REPO))

from edge.bundles.files import refresh_hashes, verify_bundle, write_manifest  # noqa: E402
from edge.bundles.manifest import HefSpec, Manifest, load_manifest  # noqa: E402
from edge.cli.bench import compose_scene  # noqa: E402
from edge.config import HailoSettings, RuntimeSettings, SourceSettings  # noqa: E402
from edge.errors import SourceError  # noqa: E402
from edge.imageio import read_image_file  # noqa: E402
from edge.sources.base import FrameSource, Pacer  # noqa: E402
from edge.sources.synthetic import drift_matrix  # noqa: E402
from edge.types import Frame, ImageRGB, OrientedBox  # noqa: E402

logger = logging.getLogger("benchmarks.hailo_live")

FAKES = REPO / "tests" / "fakes"
DEFAULT_DET_MS = 6.4  # published Hailo-8L YOLO11n-OBB-class detector latency per frame
DEFAULT_EMBED_MS = 3.0
BAR = 0.9
DET_NET, EMB_NET = "cardedge_detector", "cardedge_embedder"
CALIB_FRAMES = 6  # frames/crops behind the double's output quantisation ranges
COMPUTE_PROBES = 5  # identify() calls that measure the double's own compute


# --------------------------------------------------------------------------- the camera


class CompositeSource:
    """A paced camera filming edge.cli.bench's composited scenes of `cards` cards, drifting slowly.

    Time is counted in frames, so a scene lasts scene_seconds x fps frames whatever the pace.
    """

    def __init__(
        self,
        card_images: Sequence[ImageRGB],
        *,
        cards: int,
        fps: float,
        scene_seconds: float = 10.0,
        seed: int = 0,
    ) -> None:
        self.uri = f"composite:{cards}-cards@{fps:g}fps"
        self.live = True  # a paced camera: the loop keeps the newest frame
        self._cards = list(card_images)
        self._n = cards
        self.fps = fps
        self._frames_per_scene = max(1, round(scene_seconds * fps))
        self._seed = seed
        self._rng = np.random.default_rng(seed)
        self._pacer = Pacer(fps)
        self._base: ImageRGB | None = None
        self._phase = 0.0
        self._frame_id = 0
        self._scene_start = 0
        self._open = False

    def open(self) -> None:
        self._open = True

    def read(self) -> Frame:
        if not self._open:
            raise SourceError(f"{self.uri} is not open")
        if self._base is None or self._frame_id - self._scene_start >= self._frames_per_scene:
            self._base = compose_scene(self._cards, self._rng, per_frame=self._n)[0]
            self._scene_start = self._frame_id
            self._phase = float(self._rng.uniform(0, 2 * np.pi))
        h, w = self._base.shape[:2]
        m = drift_matrix((self._frame_id - self._scene_start) / self.fps, (w, h), self._phase)
        image = cv2.warpAffine(self._base, m, (w, h), borderMode=cv2.BORDER_REFLECT)
        self._pacer.wait()
        self._frame_id += 1
        return Frame(np.ascontiguousarray(image), self._frame_id, time.monotonic(), self.uri)

    def close(self) -> None:
        self._open = False


class ClipSource:
    """A paced camera playing a looping clip of one composited scene of `cards` cards.

    The scene sways by a periodic motion whose period is the clip, so the loop has no jump and
    the tracker sees a continuous scene. Every frame repeats once per loop, which is what lets
    the memoised chip answer from its memo after the first pass.
    """

    def __init__(
        self,
        card_images: Sequence[ImageRGB],
        *,
        cards: int,
        fps: float,
        clip_seconds: float,
        seed: int = 0,
    ) -> None:
        self.uri = f"clip:{cards}-cards@{fps:g}fps/{clip_seconds:g}s"
        self.live = True
        self.fps = fps
        base = compose_scene(list(card_images), np.random.default_rng(seed), per_frame=cards)[0]
        h, w = base.shape[:2]
        n = max(2, round(clip_seconds * fps))
        self.frames = []
        for i in range(n):
            phase = 2 * np.pi * i / n
            m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), 2.0 * np.sin(phase), 1.0)
            m[0, 2] += 0.015 * w * np.sin(phase + 1.0)
            m[1, 2] += 0.01 * h * np.cos(phase)
            frame = cv2.warpAffine(base, m, (w, h), borderMode=cv2.BORDER_REFLECT)
            self.frames.append(np.ascontiguousarray(frame))
        self._pacer = Pacer(fps)
        self._frame_id = 0
        self._open = False

    def open(self) -> None:
        self._open = True

    def read(self) -> Frame:
        if not self._open:
            raise SourceError(f"{self.uri} is not open")
        image = self.frames[self._frame_id % len(self.frames)]
        self._pacer.wait()
        self._frame_id += 1
        return Frame(image, self._frame_id, time.monotonic(), self.uri)

    def close(self) -> None:
        self._open = False


# --------------------------------------------------------------------------- the bundle


def _factory_bundle(work: Path) -> Path:
    """The tiny random-weight test bundle (tests/bundle_factory.py), built into `work`."""
    from tests.bundle_factory import build_test_bundle

    logger.info("no bundle given and no models/demo: building the tiny test bundle")
    return build_test_bundle(work / "factory-bundle")


def resolve_bundle(arg: Path | None, work: Path) -> tuple[Path, str]:
    """(bundle dir, where it came from): --bundle, else models/demo, else the test factory."""
    if arg is not None:
        if not (arg / "manifest.json").is_file():
            raise SystemExit(f"{arg} is not a bundle (no manifest.json)")
        return arg, "--bundle"
    demo = REPO / "models" / "demo"
    if (demo / "manifest.json").is_file():
        return demo, "models/demo"
    return _factory_bundle(
        work
    ), "tests/bundle_factory (random weights: its detector finds no cards)"


def published_latencies(
    manifest: Manifest, det_ms: float | None, embed_ms: float | None
) -> dict[str, Any]:
    """Device latencies to emulate: flag, else the manifest's HEF latency_ms, else the default."""

    def pick(flag: float | None, hef: HefSpec | None, default: float) -> tuple[float, str]:
        if flag is not None:
            return flag, "flag"
        if hef is not None and hef.latency_ms is not None:
            return hef.latency_ms, "manifest"
        return default, "default"

    det, det_from = pick(det_ms, manifest.detector.hef, DEFAULT_DET_MS)
    emb, emb_from = pick(embed_ms, manifest.embedder.hef, DEFAULT_EMBED_MS)
    return {"detector_ms": det, "detector_from": det_from, "embed_ms": emb, "embed_from": emb_from}


def selftest_cards(bundle: Path, manifest: Manifest) -> list[ImageRGB]:
    """The bundle's selftest scans: the cards the camera films."""
    cards = [read_image_file(bundle / name, max_pixels=40_000_000) for name in manifest.selftest]
    if not cards:
        raise SystemExit(f"{bundle} has no selftest images to film; pass --source URI")
    return cards


def _calib(images: Sequence[ImageRGB], spec: Any) -> npt.NDArray[np.uint8]:
    """Device-domain pixels (N x H x W x 3 uint8, model colour order) via training.calib."""
    from training.calib import calib_sample

    samples = [calib_sample(img, spec) for img in images]
    return np.clip(np.rint(np.stack(samples)), 0, 255).astype(np.uint8)


def _replace_detector(bundle: Path, manifest: Manifest, onnx_path: Path) -> None:
    """Swap in another YOLO-OBB ONNX export; it must take the bundle's detector input size."""
    import onnx

    dims = [
        d.dim_value for d in onnx.load(str(onnx_path)).graph.input[0].type.tensor_type.shape.dim
    ]
    want = [manifest.detector.input.height, manifest.detector.input.width]
    if dims[2:] != want:
        raise SystemExit(f"--detector takes {dims[2:]} pixels, the bundle's detector {want}")
    shutil.copyfile(onnx_path, bundle / manifest.detector.file)


def prepare_hailo_bundle(
    src: Path,
    dst: Path,
    latencies: dict[str, Any],
    *,
    detector_onnx: Path | None = None,
    det_conf: float | None = None,
) -> Manifest:
    """Copy `src` to `dst` and add the cut detector graph, fake HEFs and HefSpec entries.

    Call inside `fake_hailo()`: the double's HEF writer lives in its package.
    """
    from hailo_platform.hef_tool import make_fake_hef

    from training.hailo_compile import cut_detector_onnx

    shutil.copytree(src, dst)
    (dst / "manifest.sig").unlink(missing_ok=True)  # the copy's manifest changes
    manifest = load_manifest(dst / "manifest.json")
    if detector_onnx is not None:
        _replace_detector(dst, manifest, detector_onnx)
    det, emb = manifest.detector, manifest.embedder
    cut = cut_detector_onnx(dst / det.file, dst / "detector_cut.onnx", det.input_name)
    cards = selftest_cards(dst, manifest)
    scenes = [compose_scene(cards, np.random.default_rng(i))[0] for i in range(CALIB_FRAMES)]
    det_streams = make_fake_hef(
        dst / "detector_cut.onnx",
        dst / "detector.hef",
        arch="hailo8l",
        height=det.input.height,
        width=det.input.width,
        mean=det.input.mean,
        std=det.input.std,
        calib_pixels=_calib(scenes, det.input),
        output_onnx_names=cut.tensor_names,
        output_names=[f"{DET_NET}/conv{i}" for i in range(len(cut.tensor_names))],
        network_name=DET_NET,
        latency_ms=latencies["detector_ms"],
        input_onnx_name=det.input_name,
    )
    emb_streams = make_fake_hef(
        dst / emb.file,
        dst / "embedder.hef",
        arch="hailo8l",
        height=emb.input.height,
        width=emb.input.width,
        mean=emb.input.mean,
        std=emb.input.std,
        calib_pixels=_calib(cards, emb.input),
        output_onnx_names=[emb.output_name],
        output_names=[f"{EMB_NET}/{emb.output_name}"],
        network_name=EMB_NET,
        latency_ms=latencies["embed_ms"],
        input_onnx_name=emb.input_name,
    )

    def hef(name: str, streams: list[str], ms: float) -> HefSpec:
        return HefSpec(
            file=name, sha256="", arch="hailo8l", output_names=tuple(streams), latency_ms=ms
        )

    thresholds = manifest.thresholds
    if det_conf is not None:
        thresholds = thresholds.model_copy(update={"det_conf": det_conf})
    manifest = manifest.model_copy(
        update={
            "detector": det.model_copy(
                update={"hef": hef("detector.hef", det_streams, latencies["detector_ms"])}
            ),
            "embedder": emb.model_copy(
                update={"hef": hef("embedder.hef", emb_streams, latencies["embed_ms"])}
            ),
            "thresholds": thresholds,
        }
    )
    write_manifest(dst, refresh_hashes(dst, manifest))
    return verify_bundle(dst)


# --------------------------------------------------------------------------- the test double


@contextlib.contextmanager
def fake_hailo() -> Iterator[Any]:
    """`import hailo_platform` gets the test double (fresh chip) inside; undone on exit."""
    sys.path.insert(0, str(FAKES))

    def unload() -> None:
        for name in [m for m in sys.modules if m.split(".")[0] == "hailo_platform"]:
            del sys.modules[name]

    unload()
    try:
        hp = importlib.import_module("hailo_platform")
        hp.reset_fake_state()
        yield hp
    finally:
        unload()
        with contextlib.suppress(ValueError):
            sys.path.remove(str(FAKES))


class MemoisedChip:
    """Wraps the double's compute: each distinct input tensor per network is computed once with
    the real graph; repeats are answered from the memo (the same bytes the graph gave)."""

    def __init__(self, impl: Any) -> None:
        self.hits = 0
        self.misses = 0
        self._memo: dict[tuple[str, bytes], dict[str, npt.NDArray[np.uint8]]] = {}
        self._cls = impl.ConfiguredInferModel
        self._original: Callable[..., Any] = self._cls._compute
        chip = self

        def compute(model_self: Any, pixels: npt.NDArray[np.uint8]) -> Any:
            net = model_self._model._hef.network_name
            keys = [(net, hashlib.blake2b(p.tobytes(), digest_size=16).digest()) for p in pixels]
            missing = [i for i, k in enumerate(keys) if k not in chip._memo]
            if missing:
                out = chip._original(model_self, pixels[missing])
                for j, i in enumerate(missing):
                    chip._memo[keys[i]] = {name: v[j] for name, v in out.items()}
            chip.misses += len(missing)
            chip.hits += len(keys) - len(missing)
            first = chip._memo[keys[0]]
            return {name: np.stack([chip._memo[k][name] for k in keys]) for name in first}

        self._cls._compute = compute

    def counts(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "entries": len(self._memo)}

    def reset_counts(self) -> None:
        self.hits = self.misses = 0

    def close(self) -> None:
        self._cls._compute = self._original


class ComputeMeter:
    """Times the double's own ONNX Runtime compute per frame, per network (it is not chip time)."""

    def __init__(self, impl: Any) -> None:
        self.ms: dict[str, list[float]] = defaultdict(list)
        self._cls = impl.ConfiguredInferModel
        self._original: Callable[..., Any] = self._cls._compute
        meter = self

        def timed(model_self: Any, pixels: npt.NDArray[np.uint8]) -> Any:
            t0 = time.perf_counter()
            out = meter._original(model_self, pixels)
            per_frame = (time.perf_counter() - t0) * 1000.0 / max(1, len(pixels))
            meter.ms[model_self._model._hef.network_name].append(per_frame)
            return out

        self._cls._compute = timed

    def median(self, net: str) -> float | None:
        """Median compute ms per frame of `net`; None when it ran no job."""
        values = self.ms.get(net)
        return float(np.median(values)) if values else None

    def reset(self) -> None:
        self.ms.clear()

    def close(self) -> None:
        self._cls._compute = self._original


def emulate_device_time(
    hp: Any, meter: ComputeMeter, rec: Any, frames: Sequence[ImageRGB], latencies: dict[str, Any]
) -> dict[str, Any]:
    """Measure the double's compute, then set each network's sleep to published - compute."""
    state = hp.fake_state
    state.time_scale = 0.0
    try:
        for frame in frames:
            rec.identify(frame)
    finally:
        state.time_scale = 1.0
    measured = {"detector": meter.median(DET_NET), "embed_per_crop": meter.median(EMB_NET)}
    compute = {k: v or 0.0 for k, v in measured.items()}  # no job (no card found): nothing to hide
    published = {"detector": latencies["detector_ms"], "embed_per_crop": latencies["embed_ms"]}
    sleep = {k: max(0.0, published[k] - compute[k]) for k in published}
    state.latency_ms[DET_NET] = sleep["detector"]
    state.latency_ms[EMB_NET] = sleep["embed_per_crop"]
    meter.reset()
    return {
        "double_compute_ms": {k: _round(v) for k, v in measured.items()},
        "sleep_ms": {k: round(v, 2) for k, v in sleep.items()},
        "emulated_device_ms": {k: round(max(published[k], compute[k]), 2) for k in published},
        "exact": all(compute[k] <= published[k] for k in published),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


# --------------------------------------------------------------------------- the loop


class CountingRecognizer:
    """Delegates to a Recognizer and records cards detected and host time per live-loop frame."""

    def __init__(self, rec: Any) -> None:
        self._rec = rec
        self.cards: list[int] = []
        self.detect_ms: list[float] = []
        self.embed_ms: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rec, name)

    def detect(self, image: ImageRGB, /) -> list[OrientedBox]:
        t0 = time.perf_counter()
        boxes: list[OrientedBox] = self._rec.detect(image)
        self.detect_ms.append((time.perf_counter() - t0) * 1000.0)
        self.cards.append(len(boxes))
        return boxes

    def embed(self, crops: list[Any], /) -> npt.NDArray[np.float32]:
        t0 = time.perf_counter()
        vectors: npt.NDArray[np.float32] = self._rec.embed(crops)
        self.embed_ms.append((time.perf_counter() - t0) * 1000.0)
        return vectors


def _pct(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    a = np.asarray(values, dtype=np.float64)
    return {
        "n": len(a),
        "p50": round(float(np.percentile(a, 50)), 2),
        "p95": round(float(np.percentile(a, 95)), 2),
    }


def bar_figures(
    live_fps: float, camera_fps: float, det_ms: float, embed_ms: float, cards: int, epf: float
) -> dict[str, Any]:
    """Accelerator bounds (every card embedded every frame / as tracking embedded) and the bar."""
    bound_all = 1000.0 / (det_ms + cards * embed_ms)
    bound_tracked = 1000.0 / (det_ms + epf * embed_ms)
    target, target_tracked = min(camera_fps, bound_all), min(camera_fps, bound_tracked)
    return {
        "bound_fps_every_card": round(bound_all, 2),
        "bound_fps_as_tracked": round(bound_tracked, 2),
        "target_fps": round(target, 2),
        "ratio": round(live_fps / target, 3),
        "met": live_fps >= BAR * target,
        "target_fps_as_tracked": round(target_tracked, 2),
        "ratio_as_tracked": round(live_fps / target_tracked, 3),
        "met_as_tracked": live_fps >= BAR * target_tracked,
    }


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Everything the module docstring says; returns the JSON report."""
    from edge.live.bench import bench_live
    from edge.recognize.recognizer import Recognizer
    from edge.sources import open_source

    with tempfile.TemporaryDirectory(prefix="hailo-live-") as tmp:
        work = Path(tmp)
        src, origin = resolve_bundle(args.bundle, work)
        latencies = published_latencies(
            load_manifest(src / "manifest.json"), args.det_ms, args.embed_ms
        )
        bundle = work / "hailo-bundle"
        with fake_hailo() as hp:
            manifest = prepare_hailo_bundle(
                src, bundle, latencies, detector_onnx=args.detector, det_conf=args.det_conf
            )
            cards = selftest_cards(bundle, manifest)
            rec = Recognizer.from_bundle(
                bundle,
                RuntimeSettings(backend="hailo", onnx_threads=1),
                hailo=HailoSettings(output_format=args.output_format),
            )
            impl = sys.modules["hailo_platform.pyhailort.pyhailort"]
            chip = MemoisedChip(impl) if args.clip_seconds > 0 else None
            meter = ComputeMeter(impl)  # wraps the memo: it times what a job costs the host
            try:
                source: FrameSource
                clip: ClipSource | None = None
                if args.source:
                    settings = SourceSettings(uri=args.source, fps=args.fps)
                    source = open_source(args.source, settings, bundle_dir=bundle)
                elif chip is not None:
                    clip = ClipSource(
                        cards, cards=args.cards, fps=args.fps, clip_seconds=args.clip_seconds
                    )
                    source = clip
                else:
                    source = CompositeSource(
                        cards, cards=args.cards, fps=args.fps, scene_seconds=args.scene_seconds
                    )
                if clip is not None:
                    hp.fake_state.time_scale = 0.0
                    try:  # first pass: the real graph computes every clip frame and its crops
                        for frame in clip.frames:
                            rec.identify(frame)
                    finally:
                        hp.fake_state.time_scale = 1.0
                    meter.reset()
                    probes = clip.frames[:COMPUTE_PROBES]
                else:
                    probes = [
                        compose_scene(cards, np.random.default_rng(100 + i), per_frame=args.cards)[
                            0
                        ]
                        for i in range(COMPUTE_PROBES)
                    ]
                device = emulate_device_time(hp, meter, rec, probes, latencies)
                if chip is not None:
                    chip.reset_counts()
                counting = CountingRecognizer(rec)
                live = bench_live(cast(Any, counting), source, args.seconds, camera_fps=args.fps)
                during = {
                    "detector": meter.median(DET_NET),
                    "embed_per_crop": meter.median(EMB_NET),
                }
                device["memo"] = chip.counts() if chip is not None else None
                backends = dict(rec.backends)
            finally:
                meter.close()
                if chip is not None:
                    chip.close()
                rec.close()
    return _report(args, origin, manifest, latencies, device, during, backends, live, counting)


def _report(
    args: argparse.Namespace,
    origin: str,
    manifest: Manifest,
    latencies: dict[str, Any],
    device: dict[str, Any],
    during: dict[str, float | None],
    backends: dict[str, str],
    live: dict[str, Any],
    counting: CountingRecognizer,
) -> dict[str, Any]:
    det_ms, embed_ms = latencies["detector_ms"], latencies["embed_ms"]
    epf = float(live["embeddings_per_frame"])
    bar = bar_figures(live["live_fps"], args.fps, det_ms, embed_ms, args.cards, epf)
    emu = device["emulated_device_ms"]
    emulated = bar_figures(
        live["live_fps"], args.fps, emu["detector"], emu["embed_per_crop"], args.cards, epf
    )
    detected = np.asarray(counting.cards or [0], dtype=np.float64)
    notes: list[str] = []
    if float(detected.mean()) < BAR * args.cards:
        notes.append(
            f"the detector found {detected.mean():.2f} cards per frame, not {args.cards}: the "
            f"{args.cards}-card bar is not measured by this run (use a bundle whose detector "
            "finds the cards, e.g. models/demo)"
        )
    elif float(detected.mean()) > (2 - BAR) * args.cards:
        notes.append(
            f"the detector found {detected.mean():.2f} boxes per frame for {args.cards} cards: the "
            "loop did more embedding work than the bar asks"
        )
    if not device["exact"]:
        notes.append(
            "the test double's own CPU compute exceeds the published latency, so the emulated "
            "chip is slower than a Hailo-8L; see bar_emulated_device"
        )
    memo = device.get("memo")
    misses = memo["misses"] if memo else 0
    if misses:
        notes.append(
            f"{misses} chip jobs missed the memo during the run and were computed on this CPU "
            "(slower than the chip)"
        )
    if not all(reason.startswith("hailo") for reason in backends.values()):
        notes.append("not every model ran on the Hailo backend")
    measurable = (
        device["exact"]
        and misses <= 0.01 * max(1, live["frames"])
        and float(detected.mean()) >= BAR * args.cards
        and all(reason.startswith("hailo") for reason in backends.values())
    )
    return {
        "bundle": {
            "origin": origin,
            "bundle_id": manifest.bundle_id,
            "detector": manifest.detector.arch,
            "detector_input": [manifest.detector.input.height, manifest.detector.input.width],
            "detector_replaced": args.detector is not None,
            "det_conf": manifest.thresholds.det_conf,
            "embedder": manifest.embedder.arch,
            "embedder_input": [manifest.embedder.input.height, manifest.embedder.input.width],
        },
        "backends": backends,
        "camera": {
            "fps": args.fps,
            "source": args.source or f"compositor 1280x720, {args.cards} cards per scene",
            "scene_seconds": args.scene_seconds,
        },
        "latency_model": {
            **latencies,
            **device,
            "double_compute_ms_during_run": {k: _round(v) for k, v in during.items()},
            "output_format": args.output_format,
        },
        "cards": {
            "per_scene": args.cards,
            "detected_per_frame_mean": round(float(detected.mean()), 3),
            "frames_with_all_cards": round(float((detected >= args.cards).mean()), 3),
        },
        "live": live,
        "host_ms": {
            "detect_call": _pct(counting.detect_ms),
            "embed_call": _pct(counting.embed_ms),
        },
        "bar": {**bar, "threshold": BAR, "measurable": measurable},
        "projection_at_published_latencies": _projection(live, emu, det_ms, embed_ms, args, epf),
        "bar_emulated_device": emulated,
        "notes": notes,
    }


def _projection(
    live: dict[str, Any],
    emulated_ms: dict[str, float],
    det_ms: float,
    embed_ms: float,
    args: argparse.Namespace,
    epf: float,
) -> dict[str, Any]:
    """NOT a measurement: the fps if the measured host time per frame stayed as it was while the
    device took the published instead of the emulated time (meaningful while frames were dropped,
    i.e. the loop was saturated; host time here is inflated by the double competing for CPU)."""
    period_ms = 1000.0 / live["live_fps"] if live["live_fps"] > 0 else float("inf")
    device_ms = emulated_ms["detector"] + epf * emulated_ms["embed_per_crop"]
    host_ms = max(0.0, period_ms - device_ms)
    fps = min(args.fps, 1000.0 / (host_ms + det_ms + epf * embed_ms))
    fps_all = min(args.fps, 1000.0 / (host_ms + det_ms + args.cards * embed_ms))
    target = min(args.fps, 1000.0 / (det_ms + args.cards * embed_ms))
    return {
        "host_ms_per_frame": round(host_ms, 2),
        "saturated": live["dropped"] > 0,
        "fps": round(fps, 2),
        "ratio": round(fps / target, 3),
        "fps_every_card_embedded": round(fps_all, 2),
        "ratio_every_card_embedded": round(fps_all / target, 3),
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument(
        "--bundle", type=Path, help="bundle dir (default: models/demo, else test bundle)"
    )
    p.add_argument("--detector", type=Path, help="use this YOLO-OBB ONNX export as the detector")
    p.add_argument("--det-conf", type=float, help="override the bundle's detector confidence")
    p.add_argument("--det-ms", type=float, help=f"detector device ms (default {DEFAULT_DET_MS})")
    p.add_argument(
        "--embed-ms", type=float, help=f"embedder device ms per crop (default {DEFAULT_EMBED_MS})"
    )
    p.add_argument("--cards", type=int, default=4, help="cards per scene")
    p.add_argument("--fps", type=float, default=30.0, help="camera frame rate")
    p.add_argument("--seconds", type=float, default=20.0, help="measured seconds (after warm-up)")
    p.add_argument("--scene-seconds", type=float, default=10.0, help="film time per scene")
    p.add_argument(
        "--clip-seconds",
        type=float,
        default=2.0,
        help="loop a clip this long with the memoised chip (0: endless drifting scenes)",
    )
    p.add_argument("--source", help="an edge source URI instead of the compositor")
    p.add_argument("--output-format", choices=["uint8", "float32"], default="uint8")
    p.add_argument("--out", type=Path, help="also write the JSON report here")
    p.add_argument("--check", action="store_true", help="exit 1 when the bar is not met")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    report = run_benchmark(args)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 1 if args.check and not report["bar"]["met"] else 0


if __name__ == "__main__":
    sys.exit(main())
