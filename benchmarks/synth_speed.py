"""Scene synthesis speed on one core: scenes per second at 1280x720 (bar: >= 20/s).

Run: python benchmarks/synth_speed.py [--n 200] [--config train|test] [--write]
Card rendering is done once before timing (a dataset run renders the catalogue once too);
`--write` also times JPEG encoding as the dataset writer does.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2
import numpy as np

from training.synth.card_render import render_card
from training.synth.catalogue import procedural_catalogue
from training.synth.io import encode_jpeg, item_rng
from training.synth.scene import TEST_SCENES, TRAIN_SCENES, render_scene
from training.synth.world import SCENE_CARD_HEIGHT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=200, help="scenes to time")
    parser.add_argument("--cards", type=int, default=100, help="catalogue size")
    parser.add_argument("--config", choices=("train", "test"), default="train")
    parser.add_argument("--write", action="store_true", help="include JPEG encoding")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    cfg = TEST_SCENES if args.config == "test" else TRAIN_SCENES
    records = procedural_catalogue(args.cards, 0)
    t0 = time.perf_counter()
    images = {r.card_id: render_card(r, SCENE_CARD_HEIGHT) for r in records}
    card_ms = (time.perf_counter() - t0) / len(records) * 1000
    render_scene(images, np.random.default_rng(0), cfg)  # warm-up (noise bank)
    cards = 0
    t0 = time.perf_counter()
    for i in range(args.n):
        scene = render_scene(images, item_rng(0, "bench", i), cfg)
        cards += len(scene.cards)
        if args.write:
            encode_jpeg(scene.image)
    dt = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "config": args.config,
                "size": f"{cfg.width}x{cfg.height}",
                "scenes": args.n,
                "scenes_per_s": round(args.n / dt, 1),
                "ms_per_scene": round(dt / args.n * 1000, 1),
                "cards_per_scene": round(cards / args.n, 2),
                "card_render_ms": round(card_ms, 1),
                "jpeg_write": args.write,
            }
        )
    )


if __name__ == "__main__":
    main()
