"""Distinct procedural cards of one catalogue (a shared frame and text layout), rendered RGB."""

from __future__ import annotations

import numpy as np


def rendered_cards(n: int, seed: int, height: int = 448) -> dict[str, np.ndarray]:
    """card_id -> render of `n` cards of a procedural catalogue, no reprints or near-duplicates."""
    from training.synth.card_render import render_card
    from training.synth.catalogue import procedural_catalogue

    records = procedural_catalogue(n, seed, reprint_rate=0.0, near_duplicate_rate=0.0)
    return {r.card_id: render_card(r, height) for r in records}
