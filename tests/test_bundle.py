"""edge.bundles.files: files table, manifest writing, verification with one specific error per failure."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge.bundles.errors import (
    BundleLinkError,
    BundleMissingFileError,
    BundlePathError,
    BundleSizeMismatchError,
    BundleUnlistedFileError,
)
from edge.bundles.files import build_files_table, sha256_file, verify_bundle, write_manifest
from edge.bundles.manifest import load_manifest
from edge.errors import (
    BundleHashMismatchError,
    BundleIncompatibleError,
    BundleNotFoundError,
    BundleSchemaError,
)
from edge.recognize.index import CardIndex
from tests import bundle_factory

# The project-wide fixtures (tests/conftest.py may also import them: the bundle is built once).
factory_bundle = bundle_factory.factory_bundle
bundle_copy = bundle_factory.bundle_copy


def _edit_manifest(bundle: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Change manifest.json's raw JSON without refreshing any hash."""
    path = bundle / "manifest.json"
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw))


def test_factory_bundle_verifies(factory_bundle: Path) -> None:
    # when a freshly built bundle is verified
    manifest = verify_bundle(factory_bundle)
    # then every model, index, catalogue and selftest file is in its files table
    assert {"detector.onnx", "embedder.onnx", "index.usearch", "catalogue.sqlite"} <= set(
        manifest.files
    )
    assert set(manifest.selftest) <= set(manifest.files)
    assert manifest.embedder.sha256 == sha256_file(factory_bundle / "embedder.onnx")


def test_missing_directory_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(BundleNotFoundError):
        verify_bundle(tmp_path / "absent")


def test_missing_file_is_reported(bundle_copy: Path) -> None:
    (bundle_copy / "embedder.onnx").unlink()
    with pytest.raises(BundleMissingFileError, match=r"embedder\.onnx"):
        verify_bundle(bundle_copy)


def test_same_size_tampering_is_a_hash_mismatch(bundle_copy: Path) -> None:
    # given one byte of the index flipped (size unchanged)
    path = bundle_copy / "index.usearch"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    # when verified
    # then the hash check (not the size check) refuses it
    with pytest.raises(BundleHashMismatchError) as err:
        verify_bundle(bundle_copy)
    assert not isinstance(err.value, BundleSizeMismatchError)


def test_truncated_file_is_a_size_mismatch(bundle_copy: Path) -> None:
    path = bundle_copy / "detector.onnx"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(BundleSizeMismatchError, match=r"detector\.onnx"):
        verify_bundle(bundle_copy)


def test_unlisted_model_on_disk_is_refused(bundle_copy: Path) -> None:
    (bundle_copy / "extra.onnx").write_bytes(b"not listed")
    with pytest.raises(BundleUnlistedFileError, match=r"extra\.onnx"):
        verify_bundle(bundle_copy)


def test_model_missing_from_files_table_is_refused(bundle_copy: Path) -> None:
    _edit_manifest(bundle_copy, lambda m: m["files"].pop("embedder.onnx"))
    with pytest.raises(BundleUnlistedFileError, match=r"embedder\.onnx"):
        verify_bundle(bundle_copy)


def test_spec_hash_disagreeing_with_files_table_is_a_schema_error(bundle_copy: Path) -> None:
    _edit_manifest(bundle_copy, lambda m: m["detector"].update(sha256="0" * 64))
    with pytest.raises(BundleSchemaError, match=r"detector\.onnx"):
        verify_bundle(bundle_copy)


def test_path_trick_in_files_table_is_refused(bundle_copy: Path) -> None:
    _edit_manifest(
        bundle_copy, lambda m: m["files"].update({"../escape.txt": {"sha256": "0" * 64, "size": 1}})
    )
    with pytest.raises(BundlePathError):
        verify_bundle(bundle_copy)


def test_symlinked_file_is_refused(bundle_copy: Path, tmp_path: Path) -> None:
    # given the catalogue replaced by a link to an identical file outside the bundle
    outside = tmp_path / "outside.sqlite"
    outside.write_bytes((bundle_copy / "catalogue.sqlite").read_bytes())
    (bundle_copy / "catalogue.sqlite").unlink()
    (bundle_copy / "catalogue.sqlite").symlink_to(outside)
    # then verification refuses the link
    with pytest.raises(BundleLinkError):
        verify_bundle(bundle_copy)


def test_invalid_json_manifest_is_a_schema_error(bundle_copy: Path) -> None:
    (bundle_copy / "manifest.json").write_text("{not json")
    with pytest.raises(BundleSchemaError):
        verify_bundle(bundle_copy)


def test_write_manifest_round_trips(bundle_copy: Path) -> None:
    # given a loaded manifest
    manifest = load_manifest(bundle_copy / "manifest.json")
    # when written and read back
    write_manifest(bundle_copy, manifest)
    # then it is equal and the bundle still verifies
    assert load_manifest(bundle_copy / "manifest.json") == manifest
    assert verify_bundle(bundle_copy) == manifest


def test_files_table_excludes_manifest_and_signature(bundle_copy: Path) -> None:
    (bundle_copy / "manifest.sig").write_bytes(b"sig")
    table = build_files_table(bundle_copy)
    assert "manifest.json" not in table and "manifest.sig" not in table
    assert table["catalogue.sqlite"].size == (bundle_copy / "catalogue.sqlite").stat().st_size


def test_index_dimension_mismatch_is_incompatible(factory_bundle: Path) -> None:
    # given a manifest claiming a different index dimension than the file holds
    manifest = verify_bundle(factory_bundle)
    wrong = manifest.model_copy(update={"index": manifest.index.model_copy(update={"dim": 65})})
    # then opening the index refuses it
    with pytest.raises(BundleIncompatibleError, match="dim"):
        CardIndex.open(factory_bundle, wrong)


def test_index_dtype_mismatch_is_incompatible(factory_bundle: Path) -> None:
    manifest = verify_bundle(factory_bundle)
    wrong = manifest.model_copy(update={"index": manifest.index.model_copy(update={"dtype": "i8"})})
    with pytest.raises(BundleIncompatibleError, match="i8"):
        CardIndex.open(factory_bundle, wrong)
