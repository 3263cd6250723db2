"""`cardedge` CLI: identify output lines and exit codes, config check, bench JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge.cli.identify import result_json
from edge.cli.main import main
from edge.config import RuntimeSettings
from edge.recognize.recognizer import IdentifyResult, Recognizer
from edge.types import CardMatch, Match, OrientedBox, StageTimings
from tests import bundle_factory

factory_bundle = bundle_factory.factory_bundle

CARD_KEYS = {
    "card_id",
    "name",
    "set_id",
    "number",
    "score",
    "margin",
    "known",
    "confidence",
    "inliers",
    "reason",
    "runner_up",
    "best_card_id",
    "polygon",
    "det_conf",
}
TIMING_KEYS = {"decode", "detect", "rectify", "embed", "search", "verify", "total"}


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "cardedge.toml"
    path.write_text("[runtime]\nonnx_threads = 1\n")
    return path


@pytest.fixture
def selftest_jpg(factory_bundle: Path) -> Path:
    return next((factory_bundle / "selftest").glob("*.jpg"))


def _lines(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.strip().splitlines()]


def test_identify_json_line_has_every_field(
    factory_bundle: Path, config: Path, selftest_jpg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # when identifying one image with --json
    code = main(
        [
            "identify",
            str(selftest_jpg),
            "--bundle",
            str(factory_bundle),
            "--json",
            "--config",
            str(config),
        ]
    )
    # then one JSON line with the image, bundle, cards and every stage timing
    [line] = _lines(capsys.readouterr().out)
    assert code == 0
    assert line["image"] == str(selftest_jpg) and line["bundle_id"] == "test-bundle-1"
    assert isinstance(line["cards"], list)
    assert set(line["timings_ms"]) == TIMING_KEYS  # type: ignore[arg-type]
    assert line["timings_ms"]["decode"] > 0  # type: ignore[index]


def test_card_json_fields_come_from_the_catalogue(factory_bundle: Path) -> None:
    # given a result holding one known card at a known polygon
    rec = Recognizer.from_bundle(factory_bundle, RuntimeSettings(onnx_threads=1))
    try:
        card_id = rec.catalogue.card_id_for_key(0)
        corners = np.array([[10, 20], [110, 20], [110, 160], [10, 160]], np.float32)
        card = CardMatch(OrientedBox(corners, 0.87654), Match(card_id, 0.912345, 0.2, True))
        result = IdentifyResult("test-bundle-1", [card], StageTimings(total=5.0))
        # when rendered as a JSON line
        line = result_json("x.jpg", rec, result)
    finally:
        rec.close()
    # then the card carries the catalogue's name, set and number, rounded figures and the polygon
    [c] = line["cards"]
    assert set(c) == CARD_KEYS
    assert c["card_id"] == card_id and c["name"] and c["set_id"] and c["number"]
    assert c["score"] == 0.9123 and c["det_conf"] == 0.8765 and c["known"] is True
    assert c["polygon"] == [[10.0, 20.0], [110.0, 20.0], [110.0, 160.0], [10.0, 160.0]]


def test_bad_file_gets_error_line_and_exit_zero_when_others_succeed(
    factory_bundle: Path,
    config: Path,
    selftest_jpg: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # given one good image and one text file
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    # when both are identified
    code = main(
        [
            "identify",
            str(text),
            str(selftest_jpg),
            "--bundle",
            str(factory_bundle),
            "--json",
            "--config",
            str(config),
        ]
    )
    # then the text file gets an error line with a code, the image a result, and the exit code is 0
    bad, good = _lines(capsys.readouterr().out)
    assert bad["error"]["code"] == "bad_image"  # type: ignore[index]
    assert "cards" in good and code == 0


def test_exit_code_is_nonzero_when_every_file_fails(
    factory_bundle: Path, config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    code = main(
        [
            "identify",
            str(empty),
            str(tmp_path / "missing.png"),
            "--bundle",
            str(factory_bundle),
            "--json",
            "--config",
            str(config),
        ]
    )
    lines = _lines(capsys.readouterr().out)
    assert code == 1 and len(lines) == 2 and all("error" in line for line in lines)


def test_identify_without_json_prints_a_table(
    factory_bundle: Path, config: Path, selftest_jpg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["identify", str(selftest_jpg), "--bundle", str(factory_bundle), "--config", str(config)])
    out = capsys.readouterr().out
    assert out.startswith(f"{selftest_jpg}: ") and "card(s)" in out


def test_missing_bundle_is_a_clean_error(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["identify", "x.jpg", "--bundle", str(tmp_path / "nope"), "--config", str(config)])
    assert code == 2 and "no bundle directory" in capsys.readouterr().err


def test_config_check_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "good.yaml"
    path.write_text("server:\n  port: 9000\nruntime:\n  top_k: 3\n")
    assert main(["config", "check", str(path)]) == 0
    assert capsys.readouterr().out.strip() == "ok"


def test_config_check_lists_every_problem_with_its_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # given a file with three problems in three places
    path = tmp_path / "bad.toml"
    path.write_text("[server]\nport = 70000\n[runtime]\ntop_k = 0\n[limits]\nmax_pixls = 5\n")
    # when checked
    code = main(["config", "check", str(path)])
    # then each is reported on its own line with its dotted path, exit 1
    out = capsys.readouterr().out
    assert code == 1
    assert "server.port" in out and "runtime.top_k" in out and "limits.max_pixls" in out
    assert len(out.strip().splitlines()) == 3


def test_config_check_unparsable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[server\nport = ")
    assert main(["config", "check", str(path)]) == 1
    assert "does not parse" in capsys.readouterr().out


@pytest.mark.slow
def test_bench_json_last_line_has_the_ratios(
    factory_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # when benchmarking a few frames with --json
    code = main(
        ["bench", "--bundle", str(factory_bundle), "--frames", "3", "--threads", "1", "--json"]
    )
    # then the last line is one JSON object with the agreed figures
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0
    for key in (
        "host_ms_median",
        "forward_ms_median",
        "host_over_forward",
        "prepost_vs_ultralytics",
        "identify_over_forward",
    ):
        assert key in last
    assert last["forward_ms_median"] > 0 and last["identify_over_forward"] >= 1.0


def test_subsystem_commands_are_registered(capsys: pytest.CaptureFixture[str]) -> None:
    # when asking for the top-level help
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    # then the other subsystems' commands are listed beside identify, bench and config
    out = capsys.readouterr().out
    assert done.value.code == 0
    for command in ("identify", "bench", "config", "serve", "bundle", "doctor"):
        assert command in out


@pytest.mark.parametrize("command", ["identify", "bench"])
def test_identify_and_bench_pass_the_configured_hailo_section(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a config with a non-default hailo section
    from edge.cli import main as cli
    from edge.config import HailoSettings
    from edge.errors import EdgeError
    from edge.recognize.recognizer import Recognizer

    config = tmp_path / "c.toml"
    config.write_text("[hailo]\ntimeout_ms = 4321\n")
    seen: list[HailoSettings | None] = []

    def from_bundle(bundle: Path, runtime: object, *, hailo: HailoSettings | None = None) -> None:
        seen.append(hailo)
        raise EdgeError("stop here")

    monkeypatch.setattr(Recognizer, "from_bundle", staticmethod(from_bundle))
    # when the command loads its bundle
    args = [command, "x.jpg"] if command == "identify" else [command]
    assert cli.main([*args, "--bundle", str(tmp_path), "--config", str(config)]) == 2
    # then the Recognizer got the configured hailo section, as `serve` passes it
    assert [h.timeout_ms if h else None for h in seen] == [4321]


def test_the_table_names_both_printings_an_unknown_card_hesitates_between(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # given an identify line with a card whose art verified but whose printing did not, and a
    # named card with a close runner-up
    from edge.cli.identify import _print_table

    base = {
        "card_id": None, "name": None, "set_id": None, "number": None, "score": 0.9,
        "known": False, "confidence": "unknown", "inliers": 85, "det_conf": 0.96,
        "reason": "same art as s02-048: the printing cannot be told apart in this view",
        "runner_up": "s02-048", "best_card_id": "s03-040",
    }  # fmt: skip
    named = {**base, "card_id": "s07-017", "name": "Morrelieon", "set_id": "s07",
             "number": "017/119", "known": True, "confidence": "verified", "reason": "",
             "runner_up": "s07-018", "best_card_id": "s07-017"}  # fmt: skip
    line = {"image": "a.jpg", "cards": [base, named], "timings_ms": {"total": 12.0}}
    # when printed as the table
    _print_table(line)
    out = capsys.readouterr().out.splitlines()
    # then the unknown card names both printings, the named one its runner-up
    assert out[1].rstrip().endswith("s03-040 or s02-048?"), out[1]
    assert out[2].startswith("  s07-017") and out[2].rstrip().endswith("or s07-018?"), out[2]
