"""Index recall@1 of the default-dtype usearch index against exact float32 search.

Reference vectors: N unit vectors in D dims, clustered (cards of one set or one artwork sit close
together), by default the full catalogue size 17,592 x 768. Queries: noisy copies of random
references, like embeddings of real camera crops (cosine to their reference about 0.8-0.9).
recall@1 = share of queries whose top-1 key from the index, searched the way the runtime searches
it (edge.recognize.index: saved, loaded, exact below EXACT_MAX_VECTORS, else HNSW), equals the top-1 key of
exact float32 brute force. Bar: >= 0.999. Also prints the time per query of each search mode.

    python benchmarks/index_recall.py [--n 17592] [--dim 768] [--queries 2000] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.bundles.manifest import IndexSpec
from edge.recognize.embed import l2_normalize
from edge.recognize.index import (
    EXACT_MAX_VECTORS,
    EXPANSION_SEARCH,
    build_index,
    load_index,
    save_index,
)

DEFAULT_DTYPE = str(IndexSpec.model_fields["dtype"].default)


def clustered_vectors(
    n: int, dim: int, rng: np.random.Generator, n_clusters: int, spread: float
) -> np.ndarray:
    """n unit vectors around n_clusters random centres; spread 1.0 puts members at cosine ~0.7
    to their centre, 0.5 at ~0.9 (tight clusters: many near-equal neighbours, harder)."""
    centres = l2_normalize(rng.standard_normal((n_clusters, dim)).astype(np.float32))
    members = centres[rng.integers(n_clusters, size=n)]
    offsets = rng.standard_normal((n, dim)).astype(np.float32) * spread / np.sqrt(dim)
    return l2_normalize(members + offsets)


def noisy_queries(refs: np.ndarray, n: int, rng: np.random.Generator, noise: float) -> np.ndarray:
    """n queries, each a reference plus isotropic noise of relative size `noise`."""
    picks = refs[rng.integers(len(refs), size=n)]
    jitter = rng.standard_normal(picks.shape).astype(np.float32) * noise / np.sqrt(refs.shape[1])
    return l2_normalize(picks + jitter)


def exact_top1(refs: np.ndarray, queries: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Ground truth: float32 brute-force argmax of cosine."""
    out = np.empty(len(queries), np.int64)
    for s in range(0, len(queries), chunk):
        out[s : s + chunk] = np.argmax(queries[s : s + chunk] @ refs.T, axis=1)
    return out


def timed_search(
    index: Any, queries: np.ndarray, *, exact: bool, batch: int = 4
) -> tuple[np.ndarray, float]:
    """Top-1 keys and milliseconds per query, searching in frame-sized batches on one thread."""
    keys = np.empty(len(queries), np.int64)
    t0 = time.perf_counter()
    for s in range(0, len(queries), batch):
        hits = index.search(queries[s : s + batch], 1, exact=exact, threads=1)
        keys[s : s + batch] = np.asarray(hits.keys).reshape(-1, 1)[:, 0]
    return keys, (time.perf_counter() - t0) * 1000.0 / len(queries)


def run(
    n: int, dim: int, n_queries: int, seed: int, noise: float, spread: float, dtype: str
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    refs = clustered_vectors(n, dim, rng, n_clusters=max(1, n // 16), spread=spread)
    queries = noisy_queries(refs, n_queries, rng, noise)
    truth = exact_top1(refs, queries)
    t0 = time.perf_counter()
    index = build_index(refs, dtype)
    build_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "index.usearch"
        save_index(index, path)
        loaded = load_index(path, dim, dtype)
    runtime_exact = n <= EXACT_MAX_VECTORS
    graph_keys, graph_ms = timed_search(loaded, queries, exact=False)
    exact_keys, exact_ms = timed_search(loaded, queries[: min(400, n_queries)], exact=True)
    used = exact_keys if runtime_exact else graph_keys
    t0 = time.perf_counter()
    exact_top1(refs, queries[:400], chunk=4)
    numpy_ms = (time.perf_counter() - t0) * 1000.0 / min(400, n_queries)
    cos_to_ref = float(np.median(np.max(queries[:400] @ refs.T, axis=1)))
    return {
        "n": n,
        "dim": dim,
        "dtype": dtype,
        "queries": n_queries,
        "noise": noise,
        "spread": spread,
        "query_cosine_to_reference_median": round(cos_to_ref, 3),
        "runtime_mode": "exact" if runtime_exact else f"hnsw(expansion_search={EXPANSION_SEARCH})",
        "recall_at_1": float(np.mean(used == truth[: len(used)])),
        "recall_at_1_hnsw": float(np.mean(graph_keys == truth)),
        "recall_at_1_exact_dtype": float(np.mean(exact_keys == truth[: len(exact_keys)])),
        "ms_per_query_hnsw": round(graph_ms, 4),
        "ms_per_query_exact_usearch": round(exact_ms, 4),
        "ms_per_query_numpy_f32": round(numpy_ms, 4),
        "build_s": round(build_s, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=17_592, help="reference vectors")
    parser.add_argument("--dim", type=int, default=768, help="dimension")
    parser.add_argument("--queries", type=int, default=2000, help="queries")
    parser.add_argument("--noise", type=float, default=0.6, help="relative query noise")
    parser.add_argument("--spread", type=float, default=1.0, help="cluster spread (0.5: tight)")
    parser.add_argument("--dtype", default=DEFAULT_DTYPE, help="index dtype (default: manifest's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args()
    r = run(args.n, args.dim, args.queries, args.seed, args.noise, args.spread, args.dtype)
    print(
        f"{r['n']} x {r['dim']} {r['dtype']}, {r['queries']} queries "
        f"(median cosine to their reference {r['query_cosine_to_reference_median']}):\n"
        f"  recall@1 as the runtime searches ({r['runtime_mode']}): {r['recall_at_1']:.4f}\n"
        f"  recall@1 HNSW {r['recall_at_1_hnsw']:.4f}, exact {r['dtype']} "
        f"{r['recall_at_1_exact_dtype']:.4f}\n"
        f"  ms/query (batches of 4, 1 thread): HNSW {r['ms_per_query_hnsw']}, exact usearch "
        f"{r['ms_per_query_exact_usearch']}, numpy f32 {r['ms_per_query_numpy_f32']}\n"
        f"  build {r['build_s']} s; bar recall@1 >= 0.999: "
        f"{'PASS' if r['recall_at_1'] >= 0.999 else 'FAIL'}"
    )
    if args.json:
        print(json.dumps(r))
    return 0 if r["recall_at_1"] >= 0.999 else 1


if __name__ == "__main__":
    raise SystemExit(main())
