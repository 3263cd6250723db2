"""The overlay as the Recognizer sees it: an immutable snapshot of the taught views, prepared for
one bundle (embeddings from its embedder, features on its canvas), and the shortlist merge.

Immutable so that the live loop and API requests read it without a lock: teaching builds a new
snapshot and swaps the Recognizer's reference in one assignment. A taught view is evidence for
verification only: its embedding brings its card into the shortlist, its features and thumbnail
are one more reference to verify against under the bundle's own thresholds; the embedding-only
decision (the `probable` tier) keeps the index's scores (`index_only`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge.recognize.features import Features, FeatureSpec
from edge.recognize.verify import Verifier
from edge.types import Candidate, ImageRGB

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class TaughtCandidate(Candidate):
    """A shortlist entry whose score is a taught view's (it beat the index's, or the index did
    not shortlist the card: index_score None)."""

    index_score: float | None = None


@dataclass(frozen=True, slots=True)
class PreparedView:
    """One taught view, ready for one bundle."""

    view_id: str
    card_id: str
    embeddings: FloatArray  # 2 x D, L2-normalised: the crop upright and turned 180 degrees
    features: Features  # on the bundle's feature canvas, template features removed
    thumbnail: ImageRGB  # THUMB_H x THUMB_W RGB: the colour check's reference


class OverlaySnapshot:
    """Taught views for one bundle: nearest views by embedding, features and thumbnails by view.

    Implements edge.recognize.verify.FeatureSource (keys are view ids), so the bundle's Verifier code
    verifies a crop against a taught view exactly as against a reference scan."""

    def __init__(
        self, bundle_id: str, spec: FeatureSpec | None, views: Sequence[PreparedView] = ()
    ) -> None:
        self.bundle_id = bundle_id
        self._spec = spec or FeatureSpec()
        self.views = tuple(views)
        self._by_view = {v.view_id: v for v in self.views}
        by_card: dict[str, list[PreparedView]] = {}
        for v in self.views:
            by_card.setdefault(v.card_id, []).append(v)
        self._by_card = {c: tuple(vs) for c, vs in by_card.items()}
        self.cards = sorted(self._by_card)
        col = {c: i for i, c in enumerate(self.cards)}
        if self.views:
            self._matrix = np.ascontiguousarray(np.concatenate([v.embeddings for v in self.views]))
            owner = np.array([col[v.card_id] for v in self.views for _ in v.embeddings])
        else:
            self._matrix = np.zeros((0, 0), np.float32)
            owner = np.zeros(0, np.int64)
        # Columns grouped by card, so the best view per card is one maximum.reduceat.
        self._order = np.argsort(owner, kind="stable")
        grouped = owner[self._order]
        self._starts = (
            np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]]) if len(owner) else owner
        )
        self.verifier = Verifier(self)

    @classmethod
    def empty(cls, bundle_id: str = "") -> OverlaySnapshot:
        return cls(bundle_id, None)

    def __len__(self) -> int:
        return len(self.views)

    @property
    def spec(self) -> FeatureSpec:
        return self._spec

    def get(self, view_id: str, /) -> Features | None:
        """A view's features (FeatureSource)."""
        v = self._by_view.get(view_id)
        return v.features if v is not None else None

    def thumbnail(self, view_id: str) -> ImageRGB | None:
        v = self._by_view.get(view_id)
        return v.thumbnail if v is not None else None

    def views_of(self, card_id: str) -> tuple[PreparedView, ...]:
        return self._by_card.get(card_id, ())

    def nearest(self, vectors: FloatArray, k: int) -> list[list[Candidate]]:
        """Per query vector, the k cards whose taught views are closest (best view per card)."""
        if not self.views or len(vectors) == 0:
            return [[] for _ in range(len(vectors))]
        scores = np.asarray(vectors, np.float32) @ self._matrix.T  # N x views*2
        best = np.maximum.reduceat(scores[:, self._order], self._starts, axis=1)  # N x cards
        top = np.argsort(-best, axis=1, kind="stable")[:, :k]
        return [
            [Candidate(self.cards[j], float(best[i, j])) for j in top[i]] for i in range(len(top))
        ]


def merge_taught(index_hits: Sequence[Candidate], taught: Sequence[Candidate]) -> list[Candidate]:
    """One shortlist from the index's and the overlay's: per card the better score, best first
    (stable, so ties keep the index's order). A card scored by its taught view becomes a
    TaughtCandidate remembering its index score."""
    indexed = {c.card_id: c.score for c in index_hits}
    merged: dict[str, Candidate] = {c.card_id: c for c in index_hits}
    for t in taught:
        have = merged.get(t.card_id)
        if have is None or t.score > have.score:
            merged[t.card_id] = TaughtCandidate(t.card_id, t.score, indexed.get(t.card_id))
    return sorted(merged.values(), key=lambda c: -c.score)


def index_only(shortlist: Sequence[Candidate]) -> Sequence[Candidate]:
    """The shortlist as the index alone scored it (the input itself when nothing was taught):
    what embedding-only decisions use, so a taught view never makes `probable` easier."""
    if not any(isinstance(c, TaughtCandidate) for c in shortlist):
        return shortlist
    out: list[Candidate] = []
    for c in shortlist:
        if not isinstance(c, TaughtCandidate):
            out.append(c)
        elif c.index_score is not None:
            out.append(Candidate(c.card_id, c.index_score))
    return sorted(out, key=lambda c: -c.score)
