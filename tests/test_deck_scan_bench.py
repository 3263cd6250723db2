"""benchmarks/deck_scan.py (issue 15's list bar) on a short pile through the demo bundle: the
counts against the truth and how many frames a card takes to be named."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from tests.scripts import load_script

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "models" / "demo"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (DEMO / "manifest.json").is_file(), reason="no demo bundle"),
]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_script("benchmarks/deck_scan.py", "deck_scan_bench")


def test_a_short_pile_is_counted_and_each_card_is_named_within_its_frames(
    bench: ModuleType, tmp_path: Path
) -> None:
    # given a pile of 4 cards laid down at 30 a minute, filmed at 10 fps (20 frames a card)
    out = tmp_path / "deck.json"
    argv = ["--bundle", str(DEMO), "--source-dir", str(REPO / "reference_db" / "demo"),
            "--paces", "30", "--cards", "4", "--threads", "1", "--out", str(out)]  # fmt: skip
    # when the benchmark runs
    bench.main(argv)
    [run] = json.loads(out.read_text(encoding="utf-8"))["runs"]
    # then every card laid down is accounted for, right or wrong, and none is listed twice
    assert run["laid_down"] == 4 and run["frames_per_card"] == 20.0
    assert run["entries"] + run["missed"] - run["extra"] == 4
    # and the cards named were named while they were in view: within the card's 20 frames,
    # counted from its first frame, and no sooner after it lies still than after it appeared
    if run["placements_never_named_right"] < 4:
        assert 0 <= run["frames_to_name_median"] <= run["frames_to_name_p90"] < 20
        assert run["frames_to_name_after_still_median"] <= run["frames_to_name_median"]
        assert run["slide_frames"] == 3
