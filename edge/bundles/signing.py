"""Ed25519 signatures over a bundle's manifest.json bytes (the `cryptography` package).

The manifest holds the sha256 of every file, so signing the manifest signs the whole bundle.
manifest.sig is one line: the base64 of the 64-byte signature. Keys are PEM files (PKCS#8 private,
SubjectPublicKeyInfo public). A device configured with public keys refuses unsigned bundles and
bundles whose signature verifies against none of them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge.bundles.errors import BundleBadSignatureError, BundleUnsignedError
from edge.bundles.manifest import MANIFEST_NAME, SIGNATURE_NAME
from edge.errors import ConfigError

logger = logging.getLogger(__name__)


def generate_keypair(private_path: Path, public_path: Path) -> str:
    """Write a new Ed25519 key pair (private key mode 0600, never overwritten); return its fingerprint."""
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_pem)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return fingerprint(key.public_key())


def fingerprint(key: Ed25519PublicKey) -> str:
    """Short stable name of a public key for logs: sha256 of its raw 32 bytes, 16 hex digits."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read a PEM Ed25519 private key; anything else is a ConfigError with a hint."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise ConfigError(
            f"cannot read private key {path}: {e}", "create one with `cardedge bundle keygen`"
        ) from e
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} is not an Ed25519 private key")
    return key


def load_public_keys(paths: Sequence[Path]) -> list[Ed25519PublicKey]:
    """Read PEM Ed25519 public keys (the device's trusted signers)."""
    keys: list[Ed25519PublicKey] = []
    for path in paths:
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot read public key {path}: {e}") from e
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(f"{path} is not an Ed25519 public key")
        keys.append(key)
    return keys


def sign_manifest(bundle_dir: Path, private_key_path: Path) -> Path:
    """Sign bundle_dir/manifest.json and write manifest.sig next to it; return the .sig path."""
    key = load_private_key(private_key_path)
    signature = key.sign((bundle_dir / MANIFEST_NAME).read_bytes())
    sig_path = bundle_dir / SIGNATURE_NAME
    sig_path.write_text(base64.b64encode(signature).decode("ascii") + "\n", encoding="ascii")
    logger.info("signed %s with key %s", bundle_dir.name, fingerprint(key.public_key()))
    return sig_path


def read_signature(sig_path: Path) -> bytes:
    """Decode manifest.sig; a missing file is 'unsigned', a garbled one is a bad signature."""
    try:
        text = sig_path.read_text(encoding="ascii").strip()
    except FileNotFoundError as e:
        raise BundleUnsignedError(
            "bundle is not signed (no manifest.sig)",
            "this device only accepts signed bundles: build with `cardedge-train bundle --sign KEY`",
        ) from e
    except (OSError, UnicodeDecodeError) as e:
        raise BundleBadSignatureError(f"manifest.sig is unreadable: {e}") from e
    try:
        signature = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise BundleBadSignatureError("manifest.sig is not base64") from e
    if len(signature) != 64:
        raise BundleBadSignatureError(f"manifest.sig holds {len(signature)} bytes, not 64")
    return signature


def verify_signature(bundle_dir: Path, public_keys: Sequence[Ed25519PublicKey]) -> str:
    """Check manifest.sig against the trusted keys; return the fingerprint of the key that signed.

    Raises BundleUnsignedError (no signature) or BundleBadSignatureError (wrong key, tampered
    manifest, garbled signature)."""
    if not public_keys:
        raise ValueError("verify_signature needs at least one trusted public key")
    signature = read_signature(bundle_dir / SIGNATURE_NAME)
    manifest = (bundle_dir / MANIFEST_NAME).read_bytes()
    for key in public_keys:
        try:
            key.verify(signature, manifest)
        except InvalidSignature:
            continue
        return fingerprint(key)
    raise BundleBadSignatureError(
        "manifest signature does not verify against any trusted key",
        "the bundle was signed with another key or changed after signing",
    )
