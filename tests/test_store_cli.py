"""`cardedge bundle ...` on a state directory (the standalone entry of edge.cli.bundle)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.malformed_bundles import make_bundle, rebrand  # isort: skip

from edge.bundles.archive import pack
from edge.cli.main import main  # the `cardedge` entry point itself, not a parser of its own


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("base") / "base", "base")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_install_list_rollback_round_trip(
    base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = str(tmp_path / "state")
    a = pack(rebrand(base, tmp_path / "a", "a"), tmp_path / "a.tar.zst", "zst")
    b = rebrand(base, tmp_path / "b", "b")
    assert (
        run(capsys, "bundle", "install", str(a), "--state-dir", state, "--device-arch", "none")[0]
        == 0
    )
    assert (
        run(capsys, "bundle", "install", str(b), "--state-dir", state, "--device-arch", "none")[0]
        == 0
    )
    rc, out, _ = run(capsys, "bundle", "list", "--json", "--state-dir", state)
    assert rc == 0
    assert [(r["bundle_id"], r["current"]) for r in json.loads(out)][:2] in (
        [("b", True), ("a", False)],
        [("a", False), ("b", True)],
    )
    assert "current: a" in run(capsys, "bundle", "rollback", "--state-dir", state)[1]


def test_refusal_prints_code_and_hint_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"nope" * 200)
    rc, _, err = run(capsys, "bundle", "verify", str(junk), "--device-arch", "none")
    assert rc == 2 and "error [bundle_archive]" in err


def test_keygen_sign_verify(base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    b = rebrand(base, tmp_path / "s", "s")
    key, pub = str(tmp_path / "k.pem"), str(tmp_path / "k.pub")
    assert run(capsys, "bundle", "keygen", "--private", key, "--public", pub)[0] == 0
    rc, _, err = run(
        capsys, "bundle", "verify", str(b), "--public-key", pub, "--device-arch", "none"
    )
    assert rc == 2 and "bundle_unsigned" in err
    assert run(capsys, "bundle", "sign", str(b), "--key", key)[0] == 0
    assert (
        run(capsys, "bundle", "verify", str(b), "--public-key", pub, "--device-arch", "none")[0]
        == 0
    )
