"""Which of a reference's keypoints the camera will find again: selection by repeatability.

A scan's strongest ORB keypoints are not the ones a crop repeats. Small print and fine texture
score high on the sharp scan and vanish once the card is 100 px wide, blurred or tilted; broad
shapes score lower and survive. Keeping fewer keypoints per card (a 17,600-card catalogue must
fit its feature file in 250 MB) should therefore keep the ones that match.

Each reference is rendered as the device sees it, `VIEWS` times, with a seeded random
draw: shrunk to a card `VIEW_SHORT_PX` wide, tilted, its corners found a little wrong, blurred,
noisy, under other light, JPEG-compressed, then warped back onto the canvas as
`edge.recognize.rectify` warps a crop. The view's features are matched to the reference's by
the verifier's own test (`edge.recognize.verify.tentative_matches`), and a reference keypoint
scores one for every view where its match lands within `HIT_PX` of where the view's known
geometry puts it. The most repeated keypoints are kept, spread over the card
(`most_repeated`), strongest first among equals. (Repeatability under synthetic views is how
visual-localisation maps and instance-retrieval databases are compressed.)
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, cast

import cv2
import numpy as np
import numpy.typing as npt

from edge.recognize.features import (
    QUERY_FEATURES,
    Extractor,
    Features,
    FeatureSpec,
    distinctive_rows,
    merged,
    softened,
)
from edge.recognize.verify import Homography, tentative_matches
from edge.types import ImageRGB

VIEWS = 8
VIEW_SHORT_PX = (60.0, 260.0)  # the card's short side in the view, log-uniform
TILT = 0.08  # corner displacement of the perspective, share of the short side (std)
CORNER_ERR = 0.015  # the detector's corner error, share of the short side (std)
BLUR_SIGMA = (0.0, 1.2)  # view px, uniform
NOISE = (0.0, 6.0)  # grey levels std, uniform
GAIN, BIAS, GAMMA = (0.6, 1.3), (-30.0, 30.0), (0.7, 1.4)
JPEG = (55, 95)
HIT_PX = 4.0  # canvas px: the verifier's RANSAC threshold (edge.recognize.verify.REPROJ_PX)
SEED = 23
POOL_FEATURES = 1000  # extracted per reference (sharp, and again softened) to choose from
THREADS = min(4, os.cpu_count() or 1)  # references pooled at once
COVER_GRID = (4, 3)  # rows, columns of the canvas whose cells are given features first
COVER_SHARE = 0.3  # of a reference's features


def repeat_counts(
    gray: npt.NDArray[np.uint8], pool: Features, query: Extractor, *,
    views: int = VIEWS, seed: int | Sequence[int] = SEED,
) -> npt.NDArray[np.int32]:  # fmt: skip
    """For each of `pool`'s keypoints (on the canvas image `gray`), in how many of `views`
    simulated camera views the verifier's matching finds it again where it belongs."""
    hits = np.zeros(len(pool), np.int32)
    if len(pool) < 2:
        return hits
    rng = np.random.default_rng(seed)
    for _ in range(views):
        view, g = camera_view(gray, rng)
        q = query.extract(view)
        if len(q) < 2:
            continue
        ref_idx, q_idx = tentative_matches(q, pool, sift=query.spec.method == "sift")
        if not len(ref_idx):
            continue
        expected = cv2.perspectiveTransform(
            pool.points[ref_idx].reshape(-1, 1, 2).astype(np.float64), g
        ).reshape(-1, 2)
        ok = np.linalg.norm(expected - q.points[q_idx], axis=1) < HIT_PX
        np.add.at(hits, ref_idx[ok], 1)
    return hits


def most_repeated(
    pool: Features, hits: npt.NDArray[np.int32], keep: int, canvas: tuple[int, int]
) -> Features:
    """`keep` of pool's features (on a `canvas` of (height, width) px), the most repeated first;
    among equals pool's own order (strongest first). The reference file keeps that order (the
    local-feature shortlist indexes a card's first features).

    Repeats alone crowd a card's features into its art, where the broad shapes are, and leave
    the text box and the edges bare; a homography fitted there is extrapolated to the card's far
    corners, a few px wrong: enough to lose the small print by which printings of one art are
    told apart. So COVER_SHARE of `keep` goes first to a COVER_GRID of cells, each one's most
    repeated features (found at least once) in turn, and the rest to the most repeated overall."""
    order = np.lexsort((np.arange(len(pool)), -hits))
    if keep >= len(pool):
        return Features(pool.points[order], pool.descriptors[order])
    rows, cols = COVER_GRID
    h, w = canvas
    cell = np.clip(
        (pool.points[order, 1] * rows / h).astype(np.int64), 0, rows - 1
    ) * cols + np.clip((pool.points[order, 0] * cols / w).astype(np.int64), 0, cols - 1)
    quota = int(COVER_SHARE * keep) // (rows * cols)
    found = hits[order] > 0
    rank_in_cell = np.zeros(len(order), np.int64)
    seen = np.zeros(rows * cols, np.int64)
    for i, c in enumerate(cell.tolist()):
        rank_in_cell[i] = seen[c]
        seen[c] += 1
    chosen = found & (rank_in_cell < quota)
    rest = np.flatnonzero(~chosen)[: keep - int(chosen.sum())]
    chosen[rest] = True
    picked = order[np.flatnonzero(chosen)]  # still most repeated first
    return Features(pool.points[picked], pool.descriptors[picked])


def camera_view(gray: npt.NDArray[np.uint8], rng: np.random.Generator) -> tuple[
    npt.NDArray[np.uint8], Homography
]:  # fmt: skip
    """The canvas image `gray` as one simulated crop: (the crop on the canvas, the homography
    from canvas px to crop canvas px)."""
    h, w = gray.shape[:2]
    short = float(np.exp(rng.uniform(*np.log(VIEW_SHORT_PX))))
    s = short / w
    vw, vh = max(8, round(w * s)), max(8, round(h * s))
    shrink = s < 1.0
    small = cv2.resize(gray, (vw, vh), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    margin = round(0.2 * short)
    src = np.array([[0, 0], [vw - 1, 0], [vw - 1, vh - 1], [0, vh - 1]], np.float32)
    tilted = (src + margin + rng.normal(0.0, TILT * short, (4, 2))).astype(np.float32)
    jitter = cv2.getPerspectiveTransform(src, tilted)
    size = (vw + 2 * margin, vh + 2 * margin)
    view = _degraded(
        np.asarray(
            cv2.warpPerspective(
                small, jitter, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
            ),
            np.uint8,
        ),
        rng,
    )
    found = (tilted + rng.normal(0.0, CORNER_ERR * short, (4, 2))).astype(np.float32)
    canvas = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float32)
    back = cv2.getPerspectiveTransform(found, canvas)
    crop = cv2.warpPerspective(
        view, back, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    scale = np.diag([s, s, 1.0])
    g: Homography = back.astype(np.float64) @ jitter.astype(np.float64) @ scale
    return np.ascontiguousarray(crop), g


def _degraded(view: npt.NDArray[np.uint8], rng: np.random.Generator) -> npt.NDArray[np.uint8]:
    """Blur, light (gain, bias, gamma), sensor noise and JPEG, each drawn from its range."""
    x = view.astype(np.float32)
    sigma = rng.uniform(*BLUR_SIGMA)
    if sigma > 0.3:
        x = np.asarray(cv2.GaussianBlur(x, (0, 0), sigma), np.float32)
    x = np.clip(x * rng.uniform(*GAIN) + rng.uniform(*BIAS), 0, 255)
    x = 255.0 * (x / 255.0) ** rng.uniform(*GAMMA)
    x = x + rng.normal(0.0, rng.uniform(*NOISE), x.shape)
    out = np.clip(x, 0, 255).astype(np.uint8)
    q = int(rng.integers(JPEG[0], JPEG[1] + 1))
    ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, q])
    back = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE) if ok else None
    return cast(npt.NDArray[np.uint8], back) if back is not None else out


def reference_features(
    images: Iterable[tuple[str, ImageRGB]], spec: FeatureSpec, *, seed: int = 0
) -> list[tuple[str, Features]]:
    """Every catalogue scan's features as the device's verification expects them: a pool of
    POOL_FEATURES extracted on the canvas and again on it softened (`softened`), the features
    the catalogue shares removed (`distinctive_rows`), and of the rest the `n_features` that
    simulated camera views find again most often (`repeat_counts`, `most_repeated`)."""
    n_pool = max(POOL_FEATURES, 2 * spec.n_features)
    wide = Extractor(replace(spec, n_features=n_pool))
    query = Extractor(replace(spec, n_features=QUERY_FEATURES))

    def pooled(item: tuple[str, ImageRGB]) -> tuple[str, Features, npt.NDArray[np.int32]]:
        card_id, image = item
        gray = wide.gray(image)
        pool = merged(wide.extract(gray), wide.extract(softened(gray)))
        return card_id, pool, repeat_counts(gray, pool, query, seed=_card_seed(seed, card_id))

    ids: list[str] = []
    pools: list[Features] = []
    hits: list[npt.NDArray[np.int32]] = []
    with ThreadPoolExecutor(max_workers=THREADS) as ex:  # OpenCV releases the GIL
        for batch in _batched(images, 8 * THREADS):
            for card_id, pool, h in ex.map(pooled, batch):
                ids.append(card_id)
                pools.append(pool)
                hits.append(h)
    rows = distinctive_rows(pools, seed=seed)
    return [
        (
            card_id,
            most_repeated(
                Features(p.points[r], p.descriptors[r]),
                h[r],
                spec.n_features,
                (spec.height, spec.width),
            ),
        )
        for card_id, p, h, r in zip(ids, pools, hits, rows, strict=True)
    ]


def _card_seed(seed: int, card_id: str) -> list[int]:
    """A card's own seed for its simulated views: the same scan gets the same views in any
    catalogue, whatever cards are beside it."""
    return [seed, zlib.crc32(card_id.encode("utf-8"))]


def _batched(items: Iterable[Any], n: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch
