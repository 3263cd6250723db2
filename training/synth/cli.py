"""`cardedge-train synth ...` (and `python -m training.synth ...`): catalogue, scenes, datasets,
preview. `register` adds the `synth` command to a parent parser; `main` runs it stand-alone."""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from training.synth.card_render import render_card
from training.synth.catalogue import load_catalogue, procedural_catalogue, write_catalogue_dir
from training.synth.io import item_rng, parse_shard, shard_indices, write_jpeg, write_scene
from training.synth.preview import contact_sheet
from training.synth.scene import TEST_SCENES, TRAIN_SCENES, render_scene
from training.synth.world import SCENE_CARD_HEIGHT, WorldSpec, build_world
from training.synth.writers import progress

logger = logging.getLogger(__name__)


def _cards(args: argparse.Namespace) -> dict[str, Any]:
    records = (
        load_catalogue(args.catalogue)
        if args.catalogue
        else procedural_catalogue(args.n_cards, args.seed)
    )
    return {r.card_id: render_card(r, SCENE_CARD_HEIGHT, args.art_dir) for r in records}


def _cmd_catalogue(args: argparse.Namespace) -> int:
    records = procedural_catalogue(args.n_cards, args.seed, id_prefix=args.id_prefix)
    images = {
        r.card_id: render_card(r, args.height, args.art_dir) for r in progress(records, "cards")
    }
    write_catalogue_dir(args.out, records, images)
    print(f"wrote {len(records)} cards to {args.out}")
    return 0


def _cmd_scenes(args: argparse.Namespace) -> int:
    cfg = TEST_SCENES if args.config == "test" else TRAIN_SCENES
    cfg = replace(cfg, width=args.width, height=args.height, background_dir=args.background_dir)
    images = _cards(args)
    for i in progress(shard_indices(args.n, parse_shard(args.shard)), "scenes"):
        scene = render_scene(images, item_rng(args.seed, f"scenes-{args.config}", i), cfg)
        write_scene(args.out, f"{i:06d}", scene, {}, {})
    print(f"wrote scenes to {args.out}")
    return 0


def _cmd_datasets(args: argparse.Namespace) -> int:
    spec = WorldSpec(
        n_cards=args.n_cards,
        n_unknown=args.n_unknown,
        obb_train=args.obb_train,
        obb_val=args.obb_val,
        cls_train=args.cls_train,
        cls_val=args.cls_val,
        test_scenes=args.test_scenes,
        calib=args.calib,
        seed=args.seed,
        catalogue_dir=args.catalogue,
        art_dir=args.art_dir,
        background_dir=args.background_dir,
        back_images=tuple(args.back_image),
        shard=parse_shard(args.shard),
    )
    world = build_world(args.out, spec)
    print(f"wrote datasets under {world.root}")
    return 0


def _cmd_backgrounds(args: argparse.Namespace) -> int:
    from training.synth.photos import gather

    counts = gather(args.out, args.nexuiz_limit, args.seed, args.root)
    for family, n in counts.items():
        print(f"{family:8s} {n:5d} images")
    print(f"wrote {sum(counts.values())} backgrounds to {args.out}")
    return 0 if counts else 1


def _cmd_preview(args: argparse.Namespace) -> int:
    sheet = contact_sheet(_cards(args), args.seed)
    write_jpeg(args.out, sheet, quality=85)
    print(f"wrote {args.out}")
    return 0


def _common(p: argparse.ArgumentParser, n_cards: int = 200) -> None:
    p.add_argument("--seed", type=int, default=0, help="world seed; same seed, same bytes")
    p.add_argument("--n-cards", type=int, default=n_cards, help="procedural catalogue size")
    p.add_argument("--art-dir", type=Path, default=None, help="optional folder of art images")


def _add_commands(sub: Any) -> None:
    p = sub.add_parser(
        "catalogue", help="write a procedural catalogue folder (cards.csv + images/)"
    )
    _common(p)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--height", type=int, default=880, help="rendered card height in px")
    p.add_argument("--id-prefix", default="", help="card id prefix (disjoint catalogues)")
    p.set_defaults(func=_cmd_catalogue)

    p = sub.add_parser("scenes", help="write labelled scenes (<id>.jpg + <id>.json)")
    _common(p)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--config", choices=("train", "test"), default="train")
    p.add_argument(
        "--catalogue", type=Path, default=None, help="catalogue folder (else procedural)"
    )
    p.add_argument("--background-dir", type=Path, default=None)
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--shard", default="0/1", help="i/n: write items i, i+n, ...")
    p.set_defaults(func=_cmd_scenes)

    p = sub.add_parser(
        "datasets", help="write catalogue/, unknown/, obb/, cls/, test_scenes/, calib/"
    )
    _common(p)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--catalogue", type=Path, default=None, help="real-scan catalogue folder")
    p.add_argument(
        "--background-dir", type=Path, default=None,
        help="real backgrounds, one sub-folder per family (`synth backgrounds` writes them)",
    )  # fmt: skip
    p.add_argument(
        "--back-image", type=Path, action="append", default=[],
        help="a scan of your game's card back (repeatable), beside the procedural backs",
    )  # fmt: skip
    p.add_argument("--n-unknown", type=int, default=40)
    p.add_argument("--obb-train", type=int, default=2000)
    p.add_argument("--obb-val", type=int, default=200)
    p.add_argument("--cls-train", type=int, default=8, help="crops per card (train)")
    p.add_argument("--cls-val", type=int, default=2, help="crops per card (val)")
    p.add_argument("--test-scenes", type=int, default=200)
    p.add_argument("--calib", type=int, default=64)
    p.add_argument("--shard", default="0/1", help="i/n: write items i, i+n, ...")
    p.set_defaults(func=_cmd_datasets)

    p = sub.add_parser(
        "backgrounds", help="gather real photographs and textures (make backgrounds) into DIR"
    )
    p.add_argument("--out", type=Path, default=Path("data/backgrounds"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nexuiz-limit", type=int, default=1200, help="textures kept from the pk3")
    p.add_argument(
        "--root", type=Path, default=Path("/"), help="system root the packages are under"
    )
    p.set_defaults(func=_cmd_backgrounds)

    p = sub.add_parser("preview", help="contact sheet of 16 labelled scenes + 16 crops")
    _common(p, n_cards=60)
    p.add_argument("--catalogue", type=Path, default=None)
    p.add_argument("--out", type=Path, default=Path("docs/synth-preview.jpg"))
    p.set_defaults(func=_cmd_preview)


def register(subparsers: Any) -> None:
    """Add `synth {catalogue,scenes,datasets,preview}` to a parent command's subparsers."""
    p = subparsers.add_parser("synth", help="synthetic card world: catalogues, scenes, datasets")
    sub = p.add_subparsers(dest="synth_command", required=True)
    _add_commands(sub)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m training.synth", description=__doc__)
    sub = parser.add_subparsers(dest="synth_command", required=True)
    _add_commands(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))
