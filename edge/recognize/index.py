"""Reference index (usearch, cosine) + card catalogue (SQLite) + the unknown-card decision.

Every reference card is stored twice, as view "upright" and view "rot180", so the runtime embeds
each crop once and the 180-degree ambiguity of a detector box is resolved here: search hits are
deduplicated per card_id, the best view wins.

The writers used by training (`write_catalogue`, `build_index`, `save_index`) live here too, so
there is one implementation of the on-disk formats.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

import edge
from edge.bundles.manifest import Manifest
from edge.errors import BundleError, BundleIncompatibleError, BundleSchemaError
from edge.types import Candidate

if TYPE_CHECKING:
    from usearch.index import Index

logger = logging.getLogger(__name__)

VIEWS = ("upright", "rot180")
# At or below this many vectors, search is exact (a float32 matrix product, or usearch's exact
# mode: see CardIndex), which needs no recall argument and beats the graph (8 queries of 768-d
# against 640 f16 vectors on one shared core: product 0.34 ms, usearch exact 0.9, HNSW 1.0;
# against 4,096: 1.6, 5.4 and 4.9). Above it the HNSW graph keeps the time per query nearly
# flat (benchmarks/index_recall.py: 17,592 vectors at 0.7 ms/query, recall@1 1.000 against exact
# float32 search) and the runtime holds no float32 copy of a large catalogue.
EXACT_MAX_VECTORS = 4096
EXPANSION_SEARCH = 128  # HNSW search beam; recall rises with it (see the benchmark)

_CARD_COLUMNS = ("card_id", "name", "set_id", "set_name", "number", "rarity", "image_ref")
_SCHEMA = """
CREATE TABLE cards (
    card_id TEXT PRIMARY KEY, name TEXT NOT NULL, set_id TEXT NOT NULL, set_name TEXT NOT NULL,
    number TEXT NOT NULL, rarity TEXT NOT NULL, image_ref TEXT NOT NULL
);
CREATE TABLE index_rows (
    key INTEGER PRIMARY KEY, card_id TEXT NOT NULL REFERENCES cards(card_id), view TEXT NOT NULL
);
"""


def _usearch_index_class() -> type[Index]:
    """Import usearch lazily. onnxruntime (when installed) must be loaded first: usearch loads its
    NumKong kernels with RTLD_GLOBAL and onnxruntime segfaults at import when they come first."""
    if importlib.util.find_spec("onnxruntime") is not None:
        importlib.import_module("onnxruntime")
    from usearch.index import Index

    return Index


@dataclass(frozen=True, slots=True)
class CardInfo:
    """One catalogue row: what a card id means to a human."""

    card_id: str
    name: str
    set_id: str
    set_name: str
    number: str
    rarity: str
    image_ref: str  # reference scan, relative to the catalogue source (informational)


# --- writers (training) ---------------------------------------------------------------------


def write_catalogue(path: Path, cards: Sequence[CardInfo], rows: Sequence[tuple[str, str]]) -> None:
    """Write catalogue.sqlite: the cards and, per index key 0..n-1, its (card_id, view).

    Refuses duplicate card ids, rows naming unknown cards and unknown views, so a bundle can never
    carry an index key that resolves to nothing.
    """
    ids = [c.card_id for c in cards]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate card_id in catalogue")
    known = set(ids)
    for key, (card_id, view) in enumerate(rows):
        if card_id not in known:
            raise ValueError(f"index row {key} names unknown card {card_id!r}")
        if view not in VIEWS:
            raise ValueError(f"index row {key} has unknown view {view!r}; use one of {VIEWS}")
    path.unlink(missing_ok=True)
    con = sqlite3.connect(path)
    try:
        with con:
            con.executescript(_SCHEMA)
            con.executemany(
                "INSERT INTO cards VALUES (?, ?, ?, ?, ?, ?, ?)",
                [tuple(getattr(c, col) for col in _CARD_COLUMNS) for c in cards],
            )
            con.executemany(
                "INSERT INTO index_rows VALUES (?, ?, ?)",
                [(key, card_id, view) for key, (card_id, view) in enumerate(rows)],
            )
    finally:
        con.close()


def build_index(vectors: npt.NDArray[np.float32], dtype: str = "f16", *, threads: int = 0) -> Index:
    """N x D L2-normalised reference vectors -> a cosine usearch index with keys 0..N-1."""
    v = np.asarray(vectors, dtype=np.float32)
    if v.ndim != 2 or v.shape[0] == 0:
        raise ValueError(f"expected a non-empty N x D matrix, got shape {v.shape}")
    norms = np.linalg.norm(v, axis=1)
    if not np.allclose(norms, 1.0, atol=1e-3):
        raise ValueError(
            "reference vectors must be L2-normalised (edge.recognize.embed.l2_normalize)"
        )
    index = _usearch_index_class()(ndim=v.shape[1], metric="cos", dtype=dtype)
    index.add(np.arange(v.shape[0], dtype=np.uint64), v, threads=threads)
    return index


def save_index(index: Index, path: Path) -> None:
    """Write the index file (vectors included, so exact search works after loading)."""
    index.save(str(path))


def load_index(path: Path, dim: int, dtype: str) -> Index:
    """Load an index file, checking its dimension and stored type against what the bundle says."""
    index_cls = _usearch_index_class()
    try:
        meta = index_cls.metadata(str(path))
    except (ValueError, RuntimeError, OSError) as e:
        raise BundleSchemaError(f"index {path.name} is not a usearch index: {e}") from e
    if meta is None or int(meta["dimensions"]) != dim:
        got = None if meta is None else meta["dimensions"]
        raise BundleIncompatibleError(f"index dim {got} != manifest index.dim {dim}")
    stored = getattr(meta["kind_scalar"], "name", str(meta["kind_scalar"])).lower()
    if stored != dtype:
        raise BundleIncompatibleError(
            f"index stores {stored} vectors, manifest index.dtype says {dtype}"
        )
    index = index_cls(ndim=dim, metric="cos", dtype=dtype, expansion_search=EXPANSION_SEARCH)
    index.load(str(path))
    return index


# --- catalogue (read side) ------------------------------------------------------------------


class Catalogue:
    """Read-only card catalogue. One SQLite connection shared across threads under a lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.is_file():
            raise BundleError(f"catalogue {path.name} is missing")
        self._lock = threading.Lock()
        try:
            self._con = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False
            )
            self._con.create_function("fold", 1, _fold, deterministic=True)
            rows = self._con.execute("SELECT key, card_id FROM index_rows ORDER BY key").fetchall()
            self._count = int(self._con.execute("SELECT count(*) FROM cards").fetchone()[0])
        except sqlite3.DatabaseError as e:
            raise BundleSchemaError(f"catalogue {path.name} is unreadable: {e}") from e
        if [r[0] for r in rows] != list(range(len(rows))):
            raise BundleSchemaError(f"catalogue {path.name}: index keys are not 0..n-1")
        self._key_card = np.array([r[1] for r in rows], dtype=object)

    @property
    def key_card_ids(self) -> npt.NDArray[Any]:
        """card_id per index key (object array), for vectorised look-ups."""
        return self._key_card

    @property
    def rows(self) -> int:
        """Number of index keys the catalogue maps."""
        return len(self._key_card)

    def card_id_for_key(self, key: int) -> str:
        """The card id an index key belongs to."""
        return str(self._key_card[key])

    def get(self, card_id: str) -> CardInfo | None:
        """The card with this id, or None."""
        with self._lock:
            row = self._con.execute(
                f"SELECT {', '.join(_CARD_COLUMNS)} FROM cards WHERE card_id = ?", (card_id,)
            ).fetchone()
        return CardInfo(*row) if row else None

    def printings(self) -> dict[str, tuple[str, ...]]:
        """card_id -> the other cards of the same name (its reprints are among them), for every
        card that has any."""
        with self._lock:
            rows = self._con.execute("SELECT card_id, name FROM cards").fetchall()
        return same_name(rows)

    def search(self, q: str, limit: int = 20) -> list[CardInfo]:
        """Cards whose id, name, set id, set name or number contains `q` (case-insensitive)."""
        needle = _fold(q.strip())
        fields = ("card_id", "name", "set_id", "set_name", "number")
        where = " OR ".join(f"instr(fold({f}), ?) > 0" for f in fields)
        with self._lock:
            rows = self._con.execute(
                f"SELECT {', '.join(_CARD_COLUMNS)} FROM cards WHERE {where} "
                "ORDER BY name, set_id, number LIMIT ?",
                (*([needle] * len(fields)), max(0, limit)),
            ).fetchall()
        return [CardInfo(*r) for r in rows]

    def __len__(self) -> int:
        return self._count

    def close(self) -> None:
        with self._lock:
            self._con.close()


def same_name(rows: Iterable[tuple[object, object]]) -> dict[str, tuple[str, ...]]:
    """card_id -> the other cards whose name is the same case-folded, for every (card_id, name)
    row that has any; a card without a name shares it with none. What the device checks beside
    a verified card (`Catalogue.printings`) and the cards a bundle keeps detail images for
    (`edge.bundles.reference_features.cards_with_printings`)."""
    by_name: dict[str, list[str]] = {}
    for card_id, name in rows:
        folded = _fold(name).strip()
        if card_id and folded:
            by_name.setdefault(folded, []).append(str(card_id))
    return {
        c: tuple(o for o in ids if o != c)
        for ids in by_name.values() if len(ids) > 1 for c in ids
    }  # fmt: skip


def _fold(text: object) -> str:
    """Unicode case folding for search (SQLite's LIKE folds ASCII only: 'Pokémon' vs 'POKÉMON')."""
    return str(text).casefold() if text is not None else ""


# --- search + decision ----------------------------------------------------------------------


class CardIndex:
    """The reference index of one bundle, searched per card (views deduplicated).

    A small index (`exact`) is searched exactly: as one float32 matrix product over the stored
    vectors with the best view per card taken by a gather where numpy's BLAS runs on one thread
    (a frame's 8 queries against 640 vectors: 0.34 ms), else by usearch's exact mode (0.9 ms).
    A multi-threaded OpenBLAS would leave its workers spinning after each product, and on two
    cores they took the other core from the next frame's forward and warps (the next rectify
    0.3 ms slower, the frame no faster); see `edge.SINGLE_THREAD_BLAS`. A large index is searched
    through usearch's HNSW graph.
    """

    def __init__(
        self, index: Index, catalogue: Catalogue, *, exact: bool, blas: bool | None = None
    ) -> None:
        """`blas`: search an exact index by matrix product (default: where BLAS is one thread)."""
        self._index = index
        self.catalogue = catalogue
        self.exact = exact
        self.dim = int(index.ndim)
        card_ids, card_of_key = np.unique(catalogue.key_card_ids.astype(str), return_inverse=True)
        counts = np.bincount(card_of_key, minlength=len(card_ids))
        self._views_per_card = int(counts.max()) if counts.size else 1
        self._card_ids: list[str] = card_ids.tolist()
        self._matrix: npt.NDArray[np.float32] | None = None
        use_blas = edge.SINGLE_THREAD_BLAS if blas is None else blas
        if exact and use_blas and len(index):
            self._matrix = _exact_matrix(index, card_of_key, self._views_per_card)

    @classmethod
    def open(
        cls, bundle_dir: Path, manifest: Manifest, catalogue: Catalogue | None = None
    ) -> CardIndex:
        """Load index.usearch and check it against the manifest and the catalogue."""
        spec = manifest.index
        index = load_index(bundle_dir / spec.file, spec.dim, spec.dtype)
        cat = catalogue or Catalogue(bundle_dir / manifest.catalogue.file)
        if len(index) != spec.count or cat.rows != spec.count:
            raise BundleSchemaError(
                f"index holds {len(index)} vectors, catalogue maps {cat.rows} keys, "
                f"manifest says {spec.count}"
            )
        exact = len(index) <= EXACT_MAX_VECTORS
        logger.info(
            "index %s: %d vectors, dtype %s, exact=%s", spec.file, len(index), spec.dtype, exact
        )
        return cls(index, cat, exact=exact)

    def __len__(self) -> int:
        return len(self._index)

    @property
    def method(self) -> str:
        """How queries are answered: "product" (exact, BLAS), "exact" (usearch) or "hnsw"."""
        if self._matrix is not None:
            return "product"
        return "exact" if self.exact else "hnsw"

    def search(self, vectors: npt.NDArray[np.float32], k: int) -> list[list[Candidate]]:
        """Top-k distinct cards per query vector (rows L2-normalised), best view per card.

        Ask for k >= 2 when the result feeds `decide`: the margin needs the runner-up card.
        """
        q = np.ascontiguousarray(vectors, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"expected N x {self.dim} query vectors, got {q.shape}")
        if q.shape[0] == 0 or len(self._index) == 0:
            return [[] for _ in range(q.shape[0])]
        if self._matrix is not None:
            return self._search_exact(q, self._matrix, k)
        # k distinct cards are always within the top views_per_card * k hits (pigeonhole).
        raw_k = min(len(self._index), self._views_per_card * max(k, 1))
        hits: Any = self._index.search(q, raw_k, exact=self.exact, threads=1)
        keys = np.asarray(hits.keys).reshape(q.shape[0], -1)
        scores = 1.0 - np.asarray(hits.distances, dtype=np.float32).reshape(q.shape[0], -1)
        # usearch answers a single query with Matches (no counts), a batch with BatchMatches.
        counts = np.asarray(getattr(hits, "counts", [keys.shape[1]])).reshape(-1)
        return [
            self._dedupe(keys[i, : counts[i]], scores[i, : counts[i]], k) for i in range(len(q))
        ]

    def _search_exact(
        self,
        q: npt.NDArray[np.float32],
        matrix: npt.NDArray[np.float32],
        k: int,
    ) -> list[list[Candidate]]:
        """Cosine against every stored vector, best view per card, top k cards by score."""
        q_norm = np.sqrt(np.einsum("ij,ij->i", q, q))[:, None]  # two calls, not linalg.norm's six
        scores = (q @ matrix) / np.maximum(q_norm, 1e-12)  # matrix columns are unit length
        views = scores.reshape(len(q), self._views_per_card, len(self._card_ids))
        per_card = views.max(axis=1)  # (queries, cards): the best view of each card
        top = np.argsort(-per_card, axis=1, kind="stable")[:, : max(k, 1)]
        top_scores = per_card[np.arange(len(q))[:, None], top]
        ids = self._card_ids
        return [
            [Candidate(card_id=ids[c], score=s) for c, s in zip(row, srow, strict=True)]
            for row, srow in zip(top.tolist(), top_scores.tolist(), strict=True)
        ]

    def _dedupe(
        self, keys: npt.NDArray[Any], scores: npt.NDArray[np.float32], k: int
    ) -> list[Candidate]:
        out: list[Candidate] = []
        seen: set[str] = set()
        for card_id, score in zip(
            self.catalogue.key_card_ids[keys.astype(np.int64)], scores, strict=True
        ):
            if card_id not in seen:
                seen.add(card_id)
                out.append(Candidate(card_id=str(card_id), score=float(score)))
                if len(out) == k:
                    break
        return out

    def close(self) -> None:
        self.catalogue.close()


def _exact_matrix(
    index: Index, card_of_key: npt.NDArray[np.intp], views_per_card: int
) -> npt.NDArray[np.float32]:
    """The stored vectors as unit float32 columns (dim x views * cards), view-major: column
    v * cards + c holds card c's view v, so that a product's best view per card is one max over
    a reshape. Cards in id order; a card with fewer views repeats its own, which leaves its
    maximum unchanged. Transposed so that the product reads it in order (0.42 vs 0.47 ms for 6
    queries against 640 vectors, measured right after a model forward)."""
    n = len(index)
    stored = np.asarray(index.get(np.arange(n, dtype=np.uint64), dtype="f32"))
    matrix = stored.reshape(n, -1).astype(np.float32)
    matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    order = np.argsort(card_of_key, kind="stable")  # keys grouped by card, cards in id order
    per_card = np.split(order, np.flatnonzero(np.diff(card_of_key[order])) + 1)
    card_keys = np.stack([np.resize(keys, views_per_card) for keys in per_card])  # cards x views
    return np.ascontiguousarray(matrix[card_keys.T.ravel()].T)
