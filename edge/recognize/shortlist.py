"""A second way into verification: a shortlist from the local features themselves.

The embedder's shortlist is what loses cards at catalogue scale (issue 17: recall@10 0.73 at
17,592 cards). This is the classic large-scale instance-retrieval index over the bundle's own
reference features: every card's first `per_card` ORB descriptors (the most repeated) are hashed into `tables`
LSH tables (each key is `bits` sampled descriptor bits), one sorted bucket array per table
(CSR: bucket starts + card ids). A crop's descriptors vote for the cards in their buckets, each
vote weighted by the bucket's idf, log(cards / cards in the bucket); the top-k cards by votes are
the shortlist. It is built in memory when the bundle loads (numpy only: 5 s and 72 MB for 17,592
cards x 300 features here), so a bundle carries no extra file; `runtime.feature_shortlist` turns
it on (off by default: on the bundle's 15 px-patch ORB descriptors it found almost no card the
embedder missed, recall@10 0.50 alone at 320 cards and 0.16 at 3,320; README, Measurements).

The crop's descriptors are the ones the verification stage extracts anyway, so the index is
asked only when none of the embedder's candidates verifies (edge.recognize.verify_stage), and what it adds
goes through exactly the same verification and thresholds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import numpy.typing as npt

from edge.recognize.feature_file import ReferenceFeatures
from edge.recognize.features import Features
from edge.types import Candidate

logger = logging.getLogger(__name__)

PER_CARD = 300  # a card's first (most repeated) reference features that go into the index
TABLES = 6
BITS = 18  # key bits per table: 2**18 buckets
SHORTLIST = 10  # candidates the index adds to a card's verification
MAX_BUCKET_FRAC = 0.05  # a bucket holding more of the catalogue than this votes for nothing
SEED = 17
SAMPLE = 50_000  # reference descriptors the bit statistics are taken on
POOL = 128  # the most balanced bits each table draws from
MAX_CORR = 0.3  # ... skipping bits that correlate more with one the table already has

U8 = npt.NDArray[np.uint8]


def lsh_keys(descriptors: U8, bit_positions: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Keys (tables x N) of binary descriptors (N x bytes): each table's sampled bits packed."""
    d = np.asarray(descriptors, np.uint8)
    tables, _ = bit_positions.shape
    keys = np.zeros((tables, len(d)), np.int64)
    for t in range(tables):
        # The table's bytes as contiguous rows: one pass over memory per byte, not per bit.
        cols, row = np.unique(bit_positions[t] >> 3, return_inverse=True)
        sub = np.ascontiguousarray(d[:, cols].T)
        acc = np.zeros(len(d), np.uint32)
        for j, b in enumerate(bit_positions[t].tolist()):
            acc |= ((sub[row[j]] >> (b & 7)) & 1).astype(np.uint32) << np.uint32(j)
        keys[t] = acc
    return keys


def choose_bits(
    descriptors: U8, tables: int, bits: int, seed: int, width_bits: int = 256
) -> npt.NDArray[np.int64]:
    """Each table's sampled bit positions (tables x bits), chosen on the references themselves.

    ORB's bits are far from fair coins on a small canvas with a 15 px patch (on the demo's
    references a third are set under 30% or over 70% of the time, and some pairs correlate at
    0.97): keys of random bits crowd into few buckets and every card shares them. So each
    table draws, in a seeded random order, from the most balanced bits, skipping any that
    correlates (|r| > MAX_CORR) with one the table already has."""
    rng = np.random.default_rng(seed)
    n = len(descriptors)
    if n == 0:
        return np.stack([rng.choice(width_bits, bits, replace=False) for _ in range(tables)])
    sample = descriptors[rng.choice(n, min(n, SAMPLE), replace=False)]
    b = np.unpackbits(sample, axis=1, bitorder="little").astype(np.float32)
    mean = b.mean(axis=0)
    raw = np.corrcoef(b.T) if len(b) > 1 else np.eye(width_bits)
    corr: npt.NDArray[np.float64] = np.nan_to_num(np.asarray(raw, np.float64))
    pool = np.argsort(np.abs(mean - 0.5), kind="stable")[: max(POOL, bits)]
    out = []
    for _ in range(tables):
        chosen: list[int] = []
        for cand in rng.permutation(pool).tolist():
            if all(abs(corr[cand, c]) <= MAX_CORR for c in chosen):
                chosen.append(cand)
            if len(chosen) == bits:
                break
        rest = [int(c) for c in rng.permutation(width_bits) if c not in chosen]
        out.append(chosen + rest[: bits - len(chosen)])
    return np.array(out, np.int64)


class FeatureShortlist:
    """The inverted index: card ids per LSH bucket, one CSR table per hash function."""

    def __init__(
        self, card_ids: Sequence[str], descriptors: U8, cards: npt.NDArray[np.int64], *,
        tables: int = TABLES, bits: int = BITS, seed: int = SEED,
    ) -> None:  # fmt: skip
        """`descriptors` (N x bytes) belong to `cards` (N indices into `card_ids`)."""
        t0 = time.perf_counter()
        self.card_ids = list(card_ids)
        n = len(self.card_ids)
        width_bits = 8 * (descriptors.shape[1] if descriptors.ndim == 2 else 32)
        self.bit_positions = choose_bits(descriptors, tables, bits, seed, width_bits)
        self.bits = bits
        id_dtype = np.uint16 if n <= np.iinfo(np.uint16).max else np.uint32
        self._starts: list[npt.NDArray[np.int32 | np.int64]] = []
        self._cards: list[npt.NDArray[np.unsignedinteger]] = []
        self._idf: list[npt.NDArray[np.float32]] = []
        cap = max(2, int(MAX_BUCKET_FRAC * n))
        for t in range(tables):
            if not len(descriptors):
                pairs = np.zeros(0, np.int64)
            else:  # one vote per (bucket, card): sorted by bucket, then card (a table at a time)
                [key] = lsh_keys(descriptors, self.bit_positions[t : t + 1])
                pairs = np.sort((key << 32) | cards.astype(np.int64))
                pairs = pairs[np.concatenate([[True], pairs[1:] != pairs[:-1]])]
            bucket = pairs >> 32
            starts = np.searchsorted(bucket, np.arange((1 << bits) + 1, dtype=np.int64))
            df = np.diff(starts)
            idf = np.where(
                (df > 0) & (df <= cap), np.log(max(n, 1) / np.maximum(df, 1)), 0.0
            ).astype(np.float32)
            wide = len(pairs) >= np.iinfo(np.int32).max
            self._starts.append(starts.astype(np.int64 if wide else np.int32))
            self._cards.append((pairs & 0xFFFFFFFF).astype(id_dtype))
            self._idf.append(idf)
        self.build_ms = (time.perf_counter() - t0) * 1e3

    @classmethod
    def from_references(cls, refs: ReferenceFeatures, per_card: int = PER_CARD) -> FeatureShortlist:
        """The index over a bundle's reference file: each card's first `per_card` features
        (the file keeps them most repeated first: edge.recognize.repeatable)."""
        t0 = time.perf_counter()
        descs: list[U8] = []
        owner: list[npt.NDArray[np.int64]] = []
        for i, card_id in enumerate(refs.card_ids):
            f = refs.get(card_id)
            if f is None or len(f) == 0:
                continue
            d = np.asarray(f.descriptors[:per_card], np.uint8)
            descs.append(d)
            owner.append(np.full(len(d), i, np.int64))
        width = 32 if not descs else descs[0].shape[1]
        all_d = np.concatenate(descs) if descs else np.zeros((0, width), np.uint8)
        all_c = np.concatenate(owner) if owner else np.zeros(0, np.int64)
        index = cls(refs.card_ids, all_d, all_c)
        index.build_ms = (time.perf_counter() - t0) * 1e3
        logger.info(
            "local-feature shortlist: %d cards, %d features, %.0f ms, %.1f MB",
            len(index.card_ids), len(all_d), index.build_ms, index.nbytes / 2**20,
        )  # fmt: skip
        return index

    @property
    def nbytes(self) -> int:
        """Memory held by the index's arrays."""
        return sum(a.nbytes for group in (self._starts, self._cards, self._idf) for a in group)

    def __len__(self) -> int:
        return len(self.card_ids)

    def votes(self, descriptors: object) -> npt.NDArray[np.float64]:
        """idf-weighted votes per card (len(card_ids)) of a crop's binary descriptors; zeros
        for no, empty or malformed descriptors."""
        n = len(self.card_ids)
        d = np.asarray(descriptors) if descriptors is not None else np.zeros((0, 0), np.uint8)
        if d.ndim != 2 or d.dtype != np.uint8 or len(d) == 0 or n == 0:
            return np.zeros(n, np.float64)
        if d.shape[1] * 8 <= int(self.bit_positions.max()):
            return np.zeros(n, np.float64)
        keys = lsh_keys(d, self.bit_positions)
        total = np.zeros(n, np.float64)
        for t in range(len(self._starts)):
            starts, idf = self._starts[t], self._idf[t]
            k = np.sort(keys[t])  # a bucket hit by many of the crop's features votes once
            k = k[np.concatenate([[True], k[1:] != k[:-1]])]
            k = k[idf[k] > 0]
            if len(k) == 0:
                continue
            a, b = starts[k], starts[k + 1]
            lengths = b - a
            # Every entry of every hit bucket, without a Python loop per descriptor.
            offsets = np.repeat(a - np.cumsum(lengths) + lengths, lengths)
            entries = offsets + np.arange(int(lengths.sum()))
            weights = np.repeat(idf[k], lengths)
            total += np.bincount(self._cards[t][entries], weights=weights, minlength=n)
        return total

    def query(
        self, descriptors: object, k: int = SHORTLIST, exclude: Sequence[str] = ()
    ) -> list[Candidate]:
        """The top-k cards by votes (those with any), best first, leaving out `exclude`; the
        Candidate's score is the card's share of the crop's votes in [0, 1], not a cosine."""
        v = self.votes(descriptors)
        if not len(v) or k <= 0 or not np.any(v > 0):
            return []
        skip = set(exclude)
        want = min(len(v), k + len(skip))
        top = np.argpartition(-v, want - 1)[:want] if want < len(v) else np.arange(len(v))
        top = top[np.argsort(-v[top], kind="stable")]
        norm = float(v.sum())
        out = [
            Candidate(self.card_ids[int(i)], float(v[i]) / norm)
            for i in top
            if v[i] > 0 and self.card_ids[int(i)] not in skip
        ]
        return out[:k]


def merged(
    first: Sequence[Candidate], second: Sequence[Candidate], cap: int | None = None
) -> list[Candidate]:
    """The embedder's candidates first, then the local features' not already there, at most
    `cap` in all (None: no cap)."""
    seen = {c.card_id for c in first}
    out = [*first, *(c for c in second if c.card_id not in seen)]
    return out if cap is None else out[:cap]


def widened(
    first: Sequence[Candidate], index: FeatureShortlist | None, query: Features,
    still_needed: Callable[[], bool],
) -> Iterator[Candidate]:  # fmt: skip
    """`first`, then (lazily: only if `still_needed()` once `first` is spent) the index's
    candidates for the crop's `query` features that are not in `first`."""
    yield from first
    if index is not None and still_needed():
        # No embedding score: the twin check after a pass is bounded by count (AFTER_PASS) alone.
        found = index.query(query.descriptors, exclude=[c.card_id for c in first])
        yield from (Candidate(c.card_id, 0.0) for c in found)
