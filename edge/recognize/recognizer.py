"""Recognizer: one frame -> every card in it (box, card id, score, margin, known), with timings.

detect (letterbox -> detector forward -> OBB decode + NMS) -> rectify (perspective warp of every
box) -> embed (ALL crops of the frame in one batch, chunked by the manifest's max_batch, one
vectorised preprocess) -> search (all vectors in one index call: the shortlist) -> verify (local
features + homography per candidate, edge.recognize.verify_stage) -> decision with a confidence tier.
A bundle without reference features decides on the embedding alone (tier `probable` at best).
Views taught on the device (edge.overlay.store) join the shortlist by embedding and the verification
as extra references; an empty overlay leaves every step as it was.

Thread-safe for concurrent `identify` calls: the detector keeps per-thread buffers, ONNX Runtime
sessions and usearch searches are reentrant, the catalogue serialises its SQLite access, the
overlay is an immutable snapshot replaced whole (`use_overlay`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.backends import Backend
from edge.bundles.errors import BundleDimensionError
from edge.bundles.files import verify_bundle
from edge.bundles.manifest import Manifest
from edge.config import HailoSettings, RuntimeSettings
from edge.errors import BackendError
from edge.imageio import check_image
from edge.recognize.card_backs import decide_with_backs
from edge.recognize.decide import by_embedding, embedding_only
from edge.recognize.detect import Detector
from edge.recognize.embed import pixel_spec, takes_pixels
from edge.recognize.embed import preprocess as model_input
from edge.recognize.feature_file import ReferenceFeatures
from edge.recognize.index import CardIndex, Catalogue
from edge.recognize.load import load_backends, load_verification
from edge.recognize.rectify import ambiguous_aspect, turned_90, warp_card
from edge.recognize.taught import OverlaySnapshot, merge_taught
from edge.recognize.verify_stage import VerifyStage
from edge.types import Candidate, CardCrop, CardMatch, ImageRGB, Match, OrientedBox, StageTimings

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class IdentifyResult:
    """Every card found in one image, which bundle said so, and how long each stage took."""

    bundle_id: str
    cards: list[CardMatch]
    timings: StageTimings

    def with_decode(self, decode_ms: float) -> IdentifyResult:
        """The same result with the caller's decode time added to `decode` and `total`."""
        t = replace(self.timings, decode=decode_ms, total=self.timings.total + decode_ms)
        return replace(self, timings=t)


def _ms(t0: float, t1: float) -> float:
    return (t1 - t0) * 1000.0


class Recognizer:
    """A loaded, verified, warmed bundle that identifies cards in RGB frames."""

    def __init__(
        self,
        bundle_dir: Path,
        manifest: Manifest,
        backends: dict[str, Backend],
        reasons: dict[str, str],
        index: CardIndex,
        *,
        top_k: int = 5,
        verify: VerifyStage | None = None,
    ) -> None:
        self.bundle_dir = bundle_dir
        self.manifest = manifest
        self.bundle_id = manifest.bundle_id
        self.backends = dict(reasons)  # role -> human reason, for /v1/status
        self.top_k = top_k
        self.index = index
        self.catalogue: Catalogue = index.catalogue
        self.verify_stage = verify
        self._overlay = OverlaySnapshot.empty(self.bundle_id)
        self._detector_backend = backends["detector"]
        self._embedder_backend = backends["embedder"]
        self.detector = Detector(backends["detector"], manifest.detector, manifest.thresholds)
        self._crop_hw = (manifest.embedder.input.height, manifest.embedder.input.width)
        embedder_input = manifest.embedder.input
        self._embed_spec = (
            pixel_spec(embedder_input) if takes_pixels(self._embedder_backend) else embedder_input
        )

    @classmethod
    def from_bundle(
        cls, bundle_dir: Path, settings: RuntimeSettings, *, hailo: HailoSettings | None = None
    ) -> Recognizer:
        """Verify the bundle's files, open its index, load and warm both models."""
        manifest = verify_bundle(bundle_dir)
        if manifest.embedder.embedding_dim != manifest.index.dim:
            raise BundleDimensionError(
                f"embedder outputs {manifest.embedder.embedding_dim} dims, "
                f"index holds {manifest.index.dim}"
            )
        index = CardIndex.open(bundle_dir, manifest)
        try:
            verify = load_verification(
                bundle_dir, manifest, index.catalogue, feature_shortlist=settings.feature_shortlist
            )
            backends, reasons = load_backends(bundle_dir, manifest, settings, hailo)
        except BaseException:
            index.close()
            raise
        rec = cls(
            bundle_dir, manifest, backends, reasons, index, top_k=settings.top_k, verify=verify
        )
        try:
            rec.warm_up()
        except BaseException:
            rec.close()
            raise
        logger.info("bundle %s loaded: %s", rec.bundle_id, reasons)
        return rec

    def warm_up(self) -> None:
        """One blank frame through every stage and one full embedder batch, so the first real
        request pays no allocation cost; also proves the embedder's output matches the index."""
        h, w = self._crop_hw
        blank = np.full((h * 2, w * 3, 3), 114, np.uint8)
        self.detect(blank)
        box = OrientedBox(corners=np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32), conf=1.0)
        crops = self.crops(blank, [box] * min(4, self.manifest.embedder.max_batch))
        self.match(self.embed(crops))

    # --- the overlay (views taught on the device) -------------------------------------------

    @property
    def overlay(self) -> OverlaySnapshot:
        return self._overlay

    def use_overlay(self, snapshot: OverlaySnapshot) -> None:
        """Serve `snapshot`'s taught views from now on (one reference swap: calls in flight keep
        the snapshot they read). Refuses one prepared for another bundle."""
        if snapshot.bundle_id != self.bundle_id:
            raise ValueError(f"overlay prepared for {snapshot.bundle_id}, not {self.bundle_id}")
        self._overlay = snapshot

    @property
    def reference_features(self) -> ReferenceFeatures | None:
        """The bundle's reference features (None: it decides on the embedding alone)."""
        return self.verify_stage.refs if self.verify_stage is not None else None

    # --- stages ---------------------------------------------------------------------------

    def detect(self, image: ImageRGB) -> list[OrientedBox]:
        """Every card's oriented box in the frame, best first."""
        return self._detect(check_image(image))[0]

    def _detect(self, image: ImageRGB) -> tuple[list[OrientedBox], float]:
        tensor, info = self.detector.preprocess(image)
        t0 = time.perf_counter()
        raw = self.detector.forward(tensor)
        forward_ms = _ms(t0, time.perf_counter())
        boxes = self.detector.postprocess(raw, info, (image.shape[0], image.shape[1]))
        return boxes, forward_ms

    def crops(self, image: ImageRGB, boxes: list[OrientedBox]) -> list[CardCrop]:
        """Each box warped upright to the embedder's input size.

        OrientedBox corners are already ordered clockwise from the card's top-left (the detector
        orders them with edge.recognize.rectify.order_corners), so this warps them as they are: the same
        crops as edge.recognize.rectify.rectify without ordering every box a second time.
        """
        h, w = self._crop_hw
        return [CardCrop(image=warp_card(image, box.corners, h, w), box=box) for box in boxes]

    def embed(self, crops: list[CardCrop]) -> FloatArray:
        """N x D L2-normalised embeddings: one preprocess, forward in chunks of max_batch."""
        return self._embed(crops)[0]

    def _embed(self, crops: list[CardCrop]) -> tuple[FloatArray, float]:
        spec = self.manifest.embedder
        if not crops:
            return np.zeros((0, spec.embedding_dim), np.float32), 0.0
        batch = model_input(np.stack([c.image for c in crops]), self._embed_spec)
        parts: list[FloatArray] = []
        forward_ms = 0.0
        for start in range(0, len(batch), spec.max_batch):
            t0 = time.perf_counter()
            out = self._embedder_backend.run(batch[start : start + spec.max_batch])
            forward_ms += _ms(t0, time.perf_counter())
            parts.append(self._embedding_output(out))
        vectors = np.concatenate(parts) if len(parts) > 1 else parts[0]
        if vectors.shape != (len(crops), spec.embedding_dim):
            raise BackendError(
                f"embedder returned shape {vectors.shape}, "
                f"expected ({len(crops)}, {spec.embedding_dim})",
                "the embedder model does not match the manifest's embedding_dim",
            )
        norms = np.linalg.norm(vectors, axis=1)
        if not np.all(np.isfinite(norms)) or not np.all(norms > 0):
            # A failing accelerator must not pass for "no match": refuse, loudly.
            raise BackendError(
                "embedder produced zero or non-finite embeddings",
                "the model or its backend is broken; run `cardedge doctor`",
            )
        return (vectors / norms[:, None]).astype(np.float32), forward_ms

    def _embedding_output(self, outputs: dict[str, FloatArray]) -> FloatArray:
        name = self.manifest.embedder.output_name
        if name in outputs:
            return outputs[name]
        if len(outputs) == 1:
            return next(iter(outputs.values()))
        raise BackendError(
            f"embedder produced no output {name!r}", f"outputs were {sorted(outputs)}"
        )

    def recognise(
        self, image: ImageRGB, boxes: list[OrientedBox]
    ) -> tuple[list[CardMatch], tuple[float, float, float, float, float]]:
        """Rectify, embed (one batch), shortlist, verify and decide every box; boxes whose aspect
        is ambiguous are also embedded turned 90 degrees (both shortlists are verified).

        Returns the cards (in box order; background boxes dropped, a verified card's box is its
        refined polygon) and (rectify_ms, embed_ms, embed_forward_ms, search_ms, verify_ms).
        """
        verdicts, times = self.verdicts(image, boxes)
        return [c for c in verdicts if c is not None], times

    def verdicts(
        self, image: ImageRGB, boxes: list[OrientedBox]
    ) -> tuple[list[CardMatch | None], tuple[float, float, float, float, float]]:
        """`recognise`, aligned with `boxes`: None where a box is background or a second box on
        a card already reported."""
        cards, shortlists, times = self.shortlist(image, boxes)
        t3 = time.perf_counter()
        verdicts = self.decide(image, cards, shortlists)
        return verdicts, (*times, _ms(t3, time.perf_counter()))

    def decide(
        self, image: ImageRGB, cards: list[CardMatch], shortlists: list[list[Candidate]]
    ) -> list[CardMatch | None]:
        """The decision on `shortlist`'s output: verified where the bundle has reference
        features, else the embedding's own (`verdicts` is `shortlist` then this); boxes of a
        detector's `back` class are card backs."""
        back = self.manifest.detector.back_class
        if back is not None:
            return decide_with_backs(
                cards, shortlists, back, self.manifest.thresholds,
                lambda c, s: self._decide_faces(image, c, s),
            )  # fmt: skip
        return self._decide_faces(image, cards, shortlists)

    def _decide_faces(
        self, image: ImageRGB, cards: list[CardMatch], shortlists: list[list[Candidate]]
    ) -> list[CardMatch | None]:
        if self.verify_stage is not None:
            views = self._overlay
            return self.verify_stage.run(image, cards, shortlists, views if len(views) else None)
        return [embedding_only(c) for c in cards]

    def shortlist(
        self, image: ImageRGB, boxes: list[OrientedBox]
    ) -> tuple[list[CardMatch], list[list[Candidate]], tuple[float, float, float, float]]:
        """Embedding verdicts per box, and each box's shortlist for verification: the index's
        candidates for the crop and, for a box of ambiguous aspect, for the crop turned 90
        degrees too (the better-scoring way up first)."""
        t0 = time.perf_counter()
        alternates = [i for i, b in enumerate(boxes) if ambiguous_aspect(b.corners)]
        turned = [turned_90(boxes[i]) for i in alternates]
        crops = self.crops(image, boxes + turned)
        t1 = time.perf_counter()
        vectors, embed_fwd = self._embed(crops)
        t2 = time.perf_counter()
        k = max(self.top_k, 2, self.manifest.thresholds.verify_shortlist)
        hits = self.index.search(vectors, k) if crops else []
        thresholds = self.manifest.thresholds
        chosen = [(box, hits[i]) for i, box in enumerate(boxes)]
        lists = [list(h) for _, h in chosen]
        for n, i in enumerate(alternates):
            alt = hits[len(boxes) + n]
            if alt and (not chosen[i][1] or alt[0].score > chosen[i][1][0].score):
                lists[i] = _merge(alt, chosen[i][1])
                chosen[i] = (turned[n], alt)
            else:
                lists[i] = _merge(chosen[i][1], alt)
        views = self._overlay
        if len(views):  # taught views' cards join by their best view's score
            taught = views.nearest(vectors, k)
            for i in range(len(boxes)):
                lists[i] = merge_taught(lists[i], taught[i])
            for n, i in enumerate(alternates):
                lists[i] = merge_taught(lists[i], taught[len(boxes) + n])
        cards = [
            CardMatch(box=box, match=by_embedding(h, thresholds), top_k=tuple(h[: self.top_k]))
            for box, h in chosen
        ]
        return cards, lists, (_ms(t0, t1), _ms(t1, t2), embed_fwd, _ms(t2, time.perf_counter()))

    def match(self, vectors: FloatArray) -> list[tuple[Match, tuple[Candidate, ...]]]:
        """Per vector: the unknown decision and the top-k distinct cards (one index call)."""
        hits = self.index.search(vectors, max(self.top_k, 2))
        thresholds = self.manifest.thresholds
        return [(by_embedding(c, thresholds), tuple(c[: self.top_k])) for c in hits]

    # --- whole frame ------------------------------------------------------------------------

    def identify(self, image: ImageRGB) -> IdentifyResult:
        """Every card in an RGB frame. An image without cards gives an empty list."""
        image = check_image(image)
        t0 = time.perf_counter()
        boxes, det_fwd = self._detect(image)
        t1 = time.perf_counter()
        cards, (rectify_ms, embed_ms, emb_fwd, search_ms, verify_ms) = self.recognise(image, boxes)
        timings = StageTimings(
            detect=_ms(t0, t1),
            rectify=rectify_ms,
            embed=embed_ms,
            search=search_ms,
            verify=verify_ms,
            total=_ms(t0, time.perf_counter()),
            detect_forward=det_fwd,
            embed_forward=emb_fwd,
        )
        return IdentifyResult(bundle_id=self.bundle_id, cards=cards, timings=timings)

    def describe(self) -> dict[str, Any]:
        """Bundle, catalogue, backends (with why each was chosen), index and thresholds."""
        return {
            "bundle_id": self.bundle_id,
            "bundle_dir": str(self.bundle_dir),
            "catalogue": {"name": self.manifest.catalogue.name, "cards": len(self.catalogue)},
            "backends": {
                "detector": {
                    "reason": self.backends["detector"],
                    **self._detector_backend.describe(),
                },
                "embedder": {
                    "reason": self.backends["embedder"],
                    **self._embedder_backend.describe(),
                },
            },
            "index": {
                "vectors": len(self.index),
                "dtype": self.manifest.index.dtype,
                "dim": self.manifest.index.dim,
                "exact": self.index.exact,
                "search": self.index.method,
            },
            "verification": self._describe_verification(),
            "thresholds": self.manifest.thresholds.model_dump(),
            "top_k": self.top_k,
        }

    def _describe_verification(self) -> dict[str, Any]:
        stage = self.verify_stage
        if stage is None:
            return {
                "enabled": False,
                "reason": "the bundle has no reference features: cards are decided on the "
                "embedding alone and are never `verified`",
            }
        spec = stage.refs.spec
        return {
            "enabled": True,
            "method": spec.method,
            "n_features": spec.n_features,
            "query_features": stage.extractor.spec.n_features,
            "canvas": [spec.height, spec.width],
            "cards": len(stage.refs),
            "keypoints": stage.refs.total,
            "min_inliers": self.manifest.thresholds.verify_min_inliers,
        }

    def close(self) -> None:
        """Release both backends, the verification threads and the catalogue."""
        if self.verify_stage is not None:
            self.verify_stage.close()
        self._detector_backend.close()
        self._embedder_backend.close()
        self.index.close()


def _merge(first: Sequence[Candidate], second: Sequence[Candidate]) -> list[Candidate]:
    """Candidates of `first`, then those of `second` not already in it."""
    seen = {c.card_id for c in first}
    return [*first, *(c for c in second if c.card_id not in seen)]
