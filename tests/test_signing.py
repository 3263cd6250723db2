"""Ed25519 manifest signatures: a device with trusted keys accepts only bundles they signed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.malformed_bundles import make_bundle, rebrand  # isort: skip

from edge.bundles.archive import pack
from edge.bundles.errors import BundleBadSignatureError, BundleUnsignedError
from edge.bundles.install import InstallPolicy, install_bundle
from edge.bundles.signing import generate_keypair, load_public_keys, sign_manifest, verify_signature
from edge.bundles.store import BundleStore
from edge.errors import ConfigError


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("keys")
    generate_keypair(d / "good.key", d / "good.pub")
    generate_keypair(d / "other.key", d / "other.pub")
    return {"good": d / "good.key", "good_pub": d / "good.pub", "other": d / "other.key"}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("base") / "base", "base")


@pytest.fixture
def bundle(base: Path, tmp_path: Path) -> Path:
    return rebrand(base, tmp_path / "b", "signed")


def test_good_signature_verifies(bundle: Path, keys: dict[str, Path]) -> None:
    sign_manifest(bundle, keys["good"])
    assert len(verify_signature(bundle, load_public_keys([keys["good_pub"]]))) == 16


def test_unsigned_bundle_is_refused(bundle: Path, keys: dict[str, Path]) -> None:
    with pytest.raises(BundleUnsignedError):
        verify_signature(bundle, load_public_keys([keys["good_pub"]]))


def test_bundle_signed_with_another_key_is_refused(bundle: Path, keys: dict[str, Path]) -> None:
    sign_manifest(bundle, keys["other"])
    with pytest.raises(BundleBadSignatureError):
        verify_signature(bundle, load_public_keys([keys["good_pub"]]))


def test_manifest_changed_after_signing_is_refused(bundle: Path, keys: dict[str, Path]) -> None:
    # given a signed bundle whose manifest then gets a lowered threshold
    sign_manifest(bundle, keys["good"])
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["thresholds"] = {"unknown_score": 0.0}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleBadSignatureError):
        verify_signature(bundle, load_public_keys([keys["good_pub"]]))


def test_garbled_signature_file_is_refused(bundle: Path, keys: dict[str, Path]) -> None:
    (bundle / "manifest.sig").write_text("!!! not base64 !!!\n")
    with pytest.raises(BundleBadSignatureError):
        verify_signature(bundle, load_public_keys([keys["good_pub"]]))


def test_private_key_is_not_a_public_key(keys: dict[str, Path]) -> None:
    with pytest.raises(ConfigError):
        load_public_keys([keys["good"]])


def test_keygen_never_overwrites_a_private_key(keys: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(FileExistsError):
        generate_keypair(keys["good"], tmp_path / "x.pub")


@pytest.mark.parametrize("signer", [None, "other"])
def test_device_with_keys_refuses_unsigned_or_foreign_archives(
    bundle: Path, keys: dict[str, Path], tmp_path: Path, signer: str | None
) -> None:
    # given a device trusting the good key, and an archive unsigned or signed by another key
    if signer:
        sign_manifest(bundle, keys[signer])
    store = BundleStore(tmp_path / "state")
    policy = InstallPolicy(public_keys=tuple(load_public_keys([keys["good_pub"]])))
    error = BundleBadSignatureError if signer else BundleUnsignedError
    # when installing, then refused and nothing installed
    with pytest.raises(error):
        install_bundle(store, pack(bundle, tmp_path / "b.tar.zst", "zst"), policy)
    assert store.installed() == []


def test_device_with_keys_accepts_a_bundle_they_signed(
    bundle: Path, keys: dict[str, Path], tmp_path: Path
) -> None:
    sign_manifest(bundle, keys["good"])
    store = BundleStore(tmp_path / "state")
    policy = InstallPolicy(public_keys=tuple(load_public_keys([keys["good_pub"]])))
    result = install_bundle(store, pack(bundle, tmp_path / "b.tar.gz", "gz"), policy)
    assert result.signer is not None and store.has("signed")
    shutil.rmtree(tmp_path / "state")
