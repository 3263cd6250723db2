"""edge.recognize.index: catalogue, index writers, per-card search (views deduplicated), unknown decision."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.bundles.manifest import Thresholds
from edge.errors import BundleSchemaError
from edge.recognize.decide import by_embedding
from edge.recognize.embed import l2_normalize
from edge.recognize.index import (
    CardIndex,
    CardInfo,
    Catalogue,
    build_index,
    write_catalogue,
)
from edge.types import Candidate

DIM = 32
CARDS = [
    CardInfo("base1-001", "Pikachu", "base1", "Base Set", "001/102", "common", "a.jpg"),
    CardInfo("base1-002", "Évoli", "base1", "Base Set", "002/102", "rare", "b.jpg"),
    CardInfo("jun-007", "Raichu", "jungle", "Jungle", "007/64", "holo", "c.jpg"),
    CardInfo("jun-008", "Pikachu", "jungle", "Jungle", "008/64", "common", "d.jpg"),
]
ROWS = [(c.card_id, v) for c in CARDS for v in ("upright", "rot180")]


@pytest.fixture
def vectors() -> np.ndarray:
    """Two random unit vectors per card (upright, rot180), in ROWS order."""
    rng = np.random.default_rng(0)
    return l2_normalize(rng.standard_normal((len(ROWS), DIM)).astype(np.float32))


@pytest.fixture
def catalogue(tmp_path: Path) -> Catalogue:
    path = tmp_path / "catalogue.sqlite"
    write_catalogue(path, CARDS, ROWS)
    return Catalogue(path)


def _card_index(
    vectors: np.ndarray, catalogue: Catalogue, *, exact: bool = True, blas: bool = True
) -> CardIndex:
    return CardIndex(build_index(vectors, "f16"), catalogue, exact=exact, blas=blas)


# exact search by matrix product (one BLAS thread) and by usearch's exact mode
EXACT_WAYS = pytest.mark.parametrize("blas", [True, False], ids=["product", "usearch"])


def test_catalogue_get_returns_the_card(catalogue: Catalogue) -> None:
    assert catalogue.get("jun-007") == CARDS[2]
    assert catalogue.get("nope") is None


def test_catalogue_maps_index_keys_to_cards(catalogue: Catalogue) -> None:
    # given rows written as (card, upright), (card, rot180) per card
    # then key 3 is the second card's rot180 view and there are 4 cards
    assert catalogue.card_id_for_key(3) == "base1-002"
    assert len(catalogue) == 4 and catalogue.rows == 8


def test_catalogue_search_is_case_insensitive_beyond_ascii(catalogue: Catalogue) -> None:
    # when searching with different case, including an accented capital
    # then names match regardless of case
    assert [c.card_id for c in catalogue.search("PIKA")] == ["base1-001", "jun-008"]
    assert [c.card_id for c in catalogue.search("ÉVOLI")] == ["base1-002"]


def test_catalogue_lists_each_cards_other_printings_by_name(catalogue: Catalogue) -> None:
    # given two Pikachu printings (base set and Jungle) and two cards of their own names
    # then each Pikachu names the other, and cards without another printing are absent
    assert catalogue.printings() == {"base1-001": ("jun-008",), "jun-008": ("base1-001",)}


def test_catalogue_search_covers_set_and_number(catalogue: Catalogue) -> None:
    assert {c.card_id for c in catalogue.search("jungle")} == {"jun-007", "jun-008"}
    assert [c.card_id for c in catalogue.search("007/64")] == ["jun-007"]
    assert catalogue.search("pika", limit=1)[0].card_id == "base1-001"


def test_catalogue_is_usable_from_other_threads(catalogue: Catalogue) -> None:
    # given a catalogue opened in this thread
    from concurrent.futures import ThreadPoolExecutor

    # when read from four threads at once
    with ThreadPoolExecutor(4) as pool:
        names = list(pool.map(lambda i: catalogue.get(CARDS[i % 4].card_id), range(40)))
    # then every read succeeds
    assert all(n is not None for n in names)


def test_corrupt_catalogue_is_a_schema_error(tmp_path: Path) -> None:
    path = tmp_path / "catalogue.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(BundleSchemaError):
        Catalogue(path)


def test_write_catalogue_refuses_rows_of_unknown_cards(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown card"):
        write_catalogue(tmp_path / "c.sqlite", CARDS, [("ghost", "upright")])


def test_build_index_refuses_unnormalised_vectors() -> None:
    with pytest.raises(ValueError, match="L2-normalised"):
        build_index(np.full((3, DIM), 2.0, np.float32), "f16")


@EXACT_WAYS
def test_search_finds_a_card_by_its_rot180_view(
    vectors: np.ndarray, catalogue: Catalogue, blas: bool
) -> None:
    # given an index of 4 cards x 2 views
    index = _card_index(vectors, catalogue, blas=blas)
    # when querying with card 2's rot180 vector (key 5)
    [cands] = index.search(vectors[5:6], k=3)
    # then card 2 comes first with score ~1 (f16 storage: tolerance 1e-3)
    assert cands[0].card_id == "jun-007"
    assert cands[0].score == pytest.approx(1.0, abs=1e-3)


@EXACT_WAYS
def test_search_lists_each_card_once(vectors: np.ndarray, catalogue: Catalogue, blas: bool) -> None:
    # given a query halfway between both views of one card (both views rank high)
    index = _card_index(vectors, catalogue, blas=blas)
    q = l2_normalize(vectors[0:1] + vectors[1:2])
    # when asking for all 4 cards
    [cands] = index.search(q, k=4)
    # then each card appears exactly once, scores descending, the best view's score kept
    ids = [c.card_id for c in cands]
    assert sorted(ids) == sorted(c.card_id for c in CARDS)
    assert [c.score for c in cands] == sorted((c.score for c in cands), reverse=True)
    best = float(max(q[0] @ vectors[0], q[0] @ vectors[1]))
    assert cands[0].score == pytest.approx(best, abs=2e-3)


def test_index_says_how_it_searches(vectors: np.ndarray, catalogue: Catalogue) -> None:
    assert _card_index(vectors, catalogue).method == "product"
    assert _card_index(vectors, catalogue, blas=False).method == "exact"
    assert _card_index(vectors, catalogue, exact=False).method == "hnsw"


@EXACT_WAYS
def test_search_batches_queries(vectors: np.ndarray, catalogue: Catalogue, blas: bool) -> None:
    # when querying three vectors in one call
    index = _card_index(vectors, catalogue, blas=blas)
    results = index.search(vectors[[0, 3, 6]], k=2)
    # then each gets its own card first
    assert [r[0].card_id for r in results] == ["base1-001", "base1-002", "jun-008"]


def test_graph_search_agrees_with_exact_on_small_index(
    vectors: np.ndarray, catalogue: Catalogue
) -> None:
    # given the same vectors searched exactly and through the HNSW graph
    exact = _card_index(vectors, catalogue, exact=True).search(vectors, k=2)
    graph = _card_index(vectors, catalogue, exact=False).search(vectors, k=2)
    # then the top-1 cards agree
    assert [r[0].card_id for r in exact] == [r[0].card_id for r in graph]


def test_exact_search_equals_usearch_exact_mode_card_by_card(tmp_path: Path) -> None:
    # given 60 cards, most with both views, some with one (uneven views per card)
    rng = np.random.default_rng(3)
    cards = [
        CardInfo(f"c{i:02d}", f"Card {i}", "s", "Set", str(i), "common", "x.jpg") for i in range(60)
    ]
    rows = [
        (c.card_id, v) for i, c in enumerate(cards) for v in ("upright", "rot180")[: 1 + i % 3 % 2]
    ]
    write_catalogue(tmp_path / "c.sqlite", cards, rows)
    vectors = l2_normalize(rng.standard_normal((len(rows), DIM)).astype(np.float32))
    usearch_index = build_index(vectors, "f16")
    index = CardIndex(usearch_index, Catalogue(tmp_path / "c.sqlite"), exact=True, blas=True)
    queries = l2_normalize(vectors[::7] + 0.3 * rng.standard_normal((len(vectors[::7]), DIM)))
    # when searched through the float32 product, and through usearch's own exact search
    ours = index.search(queries, k=5)
    hits = usearch_index.search(queries, len(rows), exact=True)
    # then every query gets the same cards, each at the best score of its views
    for q, cands in enumerate(ours):
        best: dict[str, float] = {}
        for key, dist in zip(hits.keys[q], hits.distances[q], strict=True):
            best.setdefault(rows[int(key)][0], 1.0 - float(dist))
        expected = sorted(best.items(), key=lambda kv: -kv[1])[:5]
        assert [c.card_id for c in cands] == [card for card, _ in expected]
        np.testing.assert_allclose([c.score for c in cands], [s for _, s in expected], atol=1e-4)


@EXACT_WAYS
def test_exact_search_asked_for_more_cards_than_exist_lists_them_all(
    vectors: np.ndarray, catalogue: Catalogue, blas: bool
) -> None:
    [cands] = _card_index(vectors, catalogue, blas=blas).search(vectors[:1], k=10)
    assert sorted(c.card_id for c in cands) == sorted(c.card_id for c in CARDS)


def test_search_with_no_queries_returns_nothing(vectors: np.ndarray, catalogue: Catalogue) -> None:
    assert _card_index(vectors, catalogue).search(np.zeros((0, DIM), np.float32), k=3) == []


def test_search_refuses_wrong_dimension(vectors: np.ndarray, catalogue: Catalogue) -> None:
    with pytest.raises(ValueError, match="query vectors"):
        _card_index(vectors, catalogue).search(np.zeros((1, DIM + 1), np.float32), k=3)


THRESH = Thresholds(unknown_score=0.6, unknown_margin=0.05)


def test_decide_known_when_score_and_margin_pass() -> None:
    m = by_embedding([Candidate("a", 0.9), Candidate("b", 0.7)], THRESH)
    assert m.known and m.card_id == "a" and m.margin == pytest.approx(0.2)


def test_decide_unknown_when_score_too_low() -> None:
    assert not by_embedding([Candidate("a", 0.55), Candidate("b", 0.1)], THRESH).known


def test_decide_unknown_when_margin_too_small() -> None:
    # given a confident top-1 that is nearly tied with a different card
    m = by_embedding([Candidate("a", 0.95), Candidate("b", 0.93)], THRESH)
    # then it is unknown, and the margin is reported
    assert not m.known and m.margin == pytest.approx(0.02)


def test_decide_single_candidate_measures_margin_against_zero() -> None:
    m = by_embedding([Candidate("a", 0.8)], THRESH)
    assert m.known and m.margin == pytest.approx(0.8)


def test_decide_without_candidates_is_unknown() -> None:
    m = by_embedding([], THRESH)
    assert not m.known and m.card_id == ""


@pytest.mark.parametrize(
    ("given", "numpy_first", "expected"),
    [
        (None, False, "1 True"),  # the cardedge commands: one thread, and the index knows it
        ("3", False, "3 False"),  # the user's own setting is kept
        (None, True, "1 False"),  # numpy loaded before edge: too late, the index knows that too
    ],
)
def test_edge_keeps_numpy_on_one_blas_thread_unless_told_otherwise(
    given: str | None, numpy_first: bool, expected: str
) -> None:
    import os
    import subprocess
    import sys

    # given a fresh process, with or without the user's own OpenBLAS thread count
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if given is not None:
        env["OPENBLAS_NUM_THREADS"] = given
    # when edge is imported (before numpy, as the cardedge commands do, or after it)
    first = "import numpy, edge" if numpy_first else "import edge, numpy"
    code = f"{first}, os; print(os.environ['OPENBLAS_NUM_THREADS'], edge.SINGLE_THREAD_BLAS)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    # then OpenBLAS gets one thread unless told otherwise, and edge knows whether it took effect
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected
