"""Bundle files on disk: hashing, the files table, writing and verifying a manifest.

A bundle directory holds manifest.json (+ optional manifest.sig), the models, index.usearch,
catalogue.sqlite and selftest/ images. `verify_bundle` is the gate every loader passes through:
each file the manifest lists must be present with its size and sha256, and every file the
runtime would load must be listed, so a bundle cannot be altered after it was hashed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path, PurePosixPath
from typing import TypeVar

from edge.bundles.errors import (
    BundleLinkError,
    BundleMissingFileError,
    BundlePathError,
    BundleSizeMismatchError,
    BundleUnlistedFileError,
)
from edge.bundles.manifest import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    FileEntry,
    Manifest,
    ModelSpec,
    load_manifest,
)
from edge.errors import (
    BundleHashMismatchError,
    BundleNotFoundError,
    BundleSchemaError,
)

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_M = TypeVar("_M", bound=ModelSpec)
# Files the runtime loads by type; one on disk that the manifest does not list is refused.
_LOADABLE_SUFFIXES = (".onnx", ".hef", ".usearch", ".sqlite", ".bin")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def build_files_table(bundle_dir: Path) -> dict[str, FileEntry]:
    """Every regular file under the bundle (POSIX relative paths) except the manifest and its
    signature, with sha256 and size: the `files` field of a new manifest."""
    table: dict[str, FileEntry] = {}
    for path in sorted(bundle_dir.rglob("*")):
        rel = path.relative_to(bundle_dir).as_posix()
        if rel in (MANIFEST_NAME, SIGNATURE_NAME) or not path.is_file() or path.is_symlink():
            continue
        table[rel] = FileEntry(sha256=sha256_file(path), size=path.stat().st_size)
    return table


def refresh_hashes(bundle_dir: Path, manifest: Manifest) -> Manifest:
    """A copy of `manifest` whose files table and per-model/index/catalogue sha256 match the disk.

    Bundle builders call this last, then `write_manifest`.
    """
    files = build_files_table(bundle_dir)

    def digest(name: str) -> str:
        if name not in files:
            raise BundleMissingFileError(f"{name} is not in the bundle directory")
        return files[name].sha256

    def model(spec: _M) -> _M:
        update: dict[str, object] = {"sha256": digest(spec.file)}
        if spec.hef is not None:
            update["hef"] = spec.hef.model_copy(update={"sha256": digest(spec.hef.file)})
        return spec.model_copy(update=update)

    updates = {
        "files": files,
        "detector": model(manifest.detector),
        "embedder": model(manifest.embedder),
        "index": manifest.index.model_copy(update={"sha256": digest(manifest.index.file)}),
        "catalogue": manifest.catalogue.model_copy(
            update={"sha256": digest(manifest.catalogue.file)}
        ),
    }
    if manifest.verification is not None:
        v = manifest.verification
        updates["verification"] = v.model_copy(update={"sha256": digest(v.file)})
    return Manifest.model_validate(manifest.model_copy(update=updates).model_dump())


def manifest_bytes(manifest: Manifest) -> bytes:
    """The canonical serialisation written to manifest.json (what manifest.sig signs)."""
    return (json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True) + "\n").encode()


def write_manifest(bundle_dir: Path, manifest: Manifest) -> Path:
    """Write manifest.json atomically (temp file + rename) and return its path."""
    path = bundle_dir / MANIFEST_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_bytes(manifest_bytes(manifest))
    os.replace(tmp, path)
    return path


def required_files(manifest: Manifest) -> dict[str, str | None]:
    """File name -> the sha256 its own spec declares (None for selftest images)."""
    req: dict[str, str | None] = {
        manifest.detector.file: manifest.detector.sha256,
        manifest.embedder.file: manifest.embedder.sha256,
        manifest.index.file: manifest.index.sha256,
        manifest.catalogue.file: manifest.catalogue.sha256,
    }
    for spec in (manifest.detector, manifest.embedder):
        if spec.hef is not None:
            req[spec.hef.file] = spec.hef.sha256
    if manifest.verification is not None:
        req[manifest.verification.file] = manifest.verification.sha256
    for name in manifest.selftest:
        req.setdefault(name, None)
    return req


def _check_name(name: str) -> None:
    """Refuse absolute paths, '..' and backslashes in file names the manifest lists."""
    p = PurePosixPath(name)
    if not name or p.is_absolute() or ".." in p.parts or "\\" in name or str(p) != name:
        raise BundlePathError(f"manifest lists an unsafe file name {name!r}")


def _check_listed(bundle_dir: Path, manifest: Manifest) -> None:
    """Every loadable file (by spec or on disk by type) must be in the files table."""
    for name, declared in required_files(manifest).items():
        entry = manifest.files.get(name)
        if entry is None:
            raise BundleUnlistedFileError(f"{name} is not listed in the manifest's files table")
        if declared is not None and declared != entry.sha256:
            raise BundleSchemaError(f"{name}: its spec's sha256 differs from the files table")
    for path in bundle_dir.rglob("*"):
        rel = path.relative_to(bundle_dir).as_posix()
        if path.suffix in _LOADABLE_SUFFIXES and rel not in manifest.files:
            raise BundleUnlistedFileError(f"{rel} is in the bundle but not in its manifest")


def _check_file(bundle_dir: Path, name: str, entry: FileEntry) -> None:
    path = bundle_dir / name
    if path.is_symlink():
        raise BundleLinkError(f"{name} is a symbolic link")
    if not path.is_file():
        raise BundleMissingFileError(f"{name} is listed in the manifest but missing")
    size = path.stat().st_size
    if size != entry.size:
        raise BundleSizeMismatchError(f"{name}: {size} bytes, manifest says {entry.size}")
    if sha256_file(path) != entry.sha256:
        raise BundleHashMismatchError(
            f"{name}: sha256 differs from the manifest", "the file was altered or corrupted"
        )


def verify_bundle(bundle_dir: Path) -> Manifest:
    """Load manifest.json and check every file against it; return the manifest or raise a
    specific BundleError (not found, schema, unlisted, missing, size, hash, unsafe)."""
    if not bundle_dir.is_dir():
        raise BundleNotFoundError(f"no bundle directory at {bundle_dir}")
    manifest = load_manifest(bundle_dir / MANIFEST_NAME)
    for name in manifest.files:
        _check_name(name)
    _check_listed(bundle_dir, manifest)
    for name, entry in manifest.files.items():
        _check_file(bundle_dir, name, entry)
    logger.info("bundle %s verified: %d files", manifest.bundle_id, len(manifest.files))
    return manifest
