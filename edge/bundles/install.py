"""Install a bundle into the store: stream it into a staging directory, check everything, and only
then rename it into bundles/<bundle_id>/. A refused bundle leaves the store exactly as it was.

Checks, in order, each with its own error (edge/bundles/errors.py): archive safety while streaming
(paths, links, special files, sizes), signature (when the device trusts keys), manifest schema
version and schema, files table (unlisted, missing, size, sha256; every model/index/catalogue file
listed with a matching hash), HEF target arch against the device's, embedding dimension
(manifest, embedder ONNX output, index file), and that each ONNX model loads with the declared
input and output names.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge.backends.select import hef_mismatch, probe_hailo
from edge.bundles.archive import FileDigest, Limits, extract
from edge.bundles.errors import (
    BundleArchMismatchError,
    BundleDimensionError,
    BundleMissingFileError,
    BundleModelError,
    BundleSchemaVersionError,
    BundleSizeMismatchError,
    BundleUnlistedFileError,
)
from edge.bundles.files import verify_bundle
from edge.bundles.manifest import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    SIGNATURE_NAME,
    Manifest,
    load_manifest,
)
from edge.bundles.settings import BundleSettings
from edge.bundles.signing import load_public_keys, verify_signature
from edge.bundles.store import BundleStore
from edge.config import LimitSettings
from edge.errors import BundleHashMismatchError, BundleSchemaError

logger = logging.getLogger(__name__)

_UNHASHED = frozenset({MANIFEST_NAME, SIGNATURE_NAME})


@dataclass(frozen=True, slots=True)
class InstallPolicy:
    """What this device accepts. `device_arch` None: no Hailo here, HEFs are not checked."""

    limits: Limits = field(default_factory=Limits)
    device_arch: str | None = None
    public_keys: tuple[Ed25519PublicKey, ...] = ()  # non-empty: signatures required
    check_models: bool = True  # open each ONNX with onnxruntime to check names and dimension


@dataclass(frozen=True, slots=True)
class InstallResult:
    bundle_id: str
    path: Path
    added: bool  # False: the identical bundle was already installed
    manifest: Manifest
    signer: str | None  # fingerprint of the key that signed it, when checked


def install_bundle(store: BundleStore, source: Path, policy: InstallPolicy) -> InstallResult:
    """Stream `source` into staging, check it, commit it to the store. Does not activate it."""
    store.recover()
    with store.staging() as staging:
        digests = extract(source, staging, policy.limits)
        manifest, signer = check_staged(staging, digests, policy)
        path, added = store.commit(staging, manifest.bundle_id)
    logger.info("installed bundle %s (%s)", manifest.bundle_id, "new" if added else "already there")
    return InstallResult(manifest.bundle_id, path, added, manifest, signer)


def verify_source(source: Path, policy: InstallPolicy) -> Manifest:
    """Every install check on a directory or archive, without touching any store."""
    with tempfile.TemporaryDirectory(prefix="cardedge-verify-") as tmp:
        digests = extract(source, Path(tmp), policy.limits)
        manifest, _ = check_staged(Path(tmp), digests, policy)
    return manifest


def check_staged(
    staging: Path, digests: Mapping[str, FileDigest], policy: InstallPolicy
) -> tuple[Manifest, str | None]:
    """All checks after extraction; raises the specific BundleError of the first failure."""
    if MANIFEST_NAME not in digests:
        raise BundleSchemaError(
            "bundle has no manifest.json", "a bundle needs manifest.json at its root"
        )
    signer = verify_signature(staging, policy.public_keys) if policy.public_keys else None
    check_schema_version(staging / MANIFEST_NAME)
    manifest = load_manifest(staging / MANIFEST_NAME)
    check_files(manifest, digests)
    verify_bundle(staging)  # CORE's gate, the same one every loader passes through
    check_hef_arch(manifest, policy.device_arch)
    check_dimensions(manifest, staging, check_models=policy.check_models)
    return manifest, signer


def check_schema_version(manifest_path: Path) -> None:
    """An unknown schema version gets its own error before the schema itself is read."""
    try:
        raw: Any = json.loads(manifest_path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleSchemaError(f"manifest is not valid JSON: {e}") from e
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if version != SCHEMA_VERSION:
        raise BundleSchemaVersionError(
            f"manifest schema_version {version!r} is not supported",
            f"this runtime reads schema_version {SCHEMA_VERSION}; upgrade cardedge or rebuild",
        )


def _spec_files(manifest: Manifest) -> dict[str, str]:
    """file -> sha256 the model, index and catalogue specs declare (HEFs included)."""
    out = {
        manifest.index.file: manifest.index.sha256,
        manifest.catalogue.file: manifest.catalogue.sha256,
    }
    for spec in (manifest.detector, manifest.embedder):
        out[spec.file] = spec.sha256
        if spec.hef is not None:
            out[spec.hef.file] = spec.hef.sha256
    return out


def check_files(manifest: Manifest, digests: Mapping[str, FileDigest]) -> None:
    """The files table and the bundle agree exactly, and every spec'd file is listed with its hash."""
    for name in sorted(digests):
        if name not in _UNHASHED and name not in manifest.files:
            raise BundleUnlistedFileError(f"{name!r} is not listed in the manifest's files table")
    for name, entry in sorted(manifest.files.items()):
        got = digests.get(name)
        if got is None:
            raise BundleMissingFileError(f"{name!r} is listed in the manifest but missing")
        if got.size != entry.size:
            raise BundleSizeMismatchError(
                f"{name!r} is {got.size} bytes, manifest says {entry.size}"
            )
        if got.sha256 != entry.sha256:
            raise BundleHashMismatchError(f"{name!r} sha256 differs from the manifest")
    needed = _spec_files(manifest)
    for image in manifest.selftest:
        needed.setdefault(image, "")  # listed is enough: its hash is in the files table
    for name, sha in sorted(needed.items()):
        if name not in manifest.files:
            raise BundleMissingFileError(f"{name!r} is referenced by the manifest but not listed")
        if sha and manifest.files[name].sha256 != sha:
            raise BundleHashMismatchError(
                f"{name!r}: the spec's sha256 differs from the files table"
            )


def check_hef_arch(manifest: Manifest, device_arch: str | None) -> None:
    """Refuse a HEF this device's Hailo cannot run (only when a Hailo is present)."""
    if device_arch is None:
        return
    for role, spec in (("detector", manifest.detector), ("embedder", manifest.embedder)):
        if spec.hef is None:
            continue
        why = hef_mismatch(spec.hef, device_arch)
        if why:
            raise BundleArchMismatchError(
                f"{role}: {why}",
                f"build the bundle with `cardedge-train compile-hef --arch {device_arch}`",
            )


def check_dimensions(manifest: Manifest, bundle_dir: Path, *, check_models: bool) -> None:
    """Embedder output dim == manifest embedding_dim == index dim == the index file's dimension."""
    emb, idx = manifest.embedder.embedding_dim, manifest.index.dim
    if emb != idx:
        raise BundleDimensionError(f"embedder dimension {emb} differs from the index's {idx}")
    if not check_models:
        return
    # onnxruntime before usearch: importing them the other way round crashes some builds.
    _check_onnx(
        bundle_dir,
        manifest.detector.file,
        manifest.detector.input_name,
        manifest.detector.output_name,
        None,
    )
    _check_onnx(
        bundle_dir,
        manifest.embedder.file,
        manifest.embedder.input_name,
        manifest.embedder.output_name,
        emb,
    )
    file_dim = _index_file_dim(bundle_dir / manifest.index.file)
    if file_dim != idx:
        raise BundleDimensionError(f"index file holds {file_dim}-d vectors, manifest says {idx}")


def _check_onnx(
    bundle_dir: Path, file: str, input_name: str, output_name: str, dim: int | None
) -> None:
    """Load one ONNX model's metadata; its declared input/output exist and the output's last axis
    equals `dim` when that axis is static."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(
            str(bundle_dir / file), opts, providers=["CPUExecutionProvider"]
        )
    except Exception as e:  # onnxruntime raises its own untyped errors for bad graphs
        raise BundleModelError(f"{file} does not load: {e}") from e
    inputs = {i.name for i in session.get_inputs()}
    outputs = {o.name: o.shape for o in session.get_outputs()}
    if input_name not in inputs:
        raise BundleModelError(f"{file} has no input {input_name!r} (has {sorted(inputs)})")
    if output_name not in outputs:
        raise BundleModelError(f"{file} has no output {output_name!r} (has {sorted(outputs)})")
    last = outputs[output_name][-1] if outputs[output_name] else None
    if dim is not None and isinstance(last, int) and last != dim:
        raise BundleDimensionError(f"{file} outputs {last}-d embeddings, the index holds {dim}-d")


def _index_file_dim(path: Path) -> int:
    from usearch.index import Index

    try:
        meta: dict[str, Any] | None = Index.metadata(str(path))
    except Exception as e:  # usearch raises RuntimeError / ValueError for foreign files
        raise BundleModelError(f"{path.name} is not a usearch index: {e}") from e
    if not meta or "dimensions" not in meta:
        raise BundleModelError(f"{path.name} is not a usearch index")
    return int(meta["dimensions"])


def resolve_device_arch(setting: str) -> str | None:
    """The Hailo arch HEFs must fit, from the `bundles.device_arch` setting (auto: probe)."""
    if setting == "none":
        return None
    if setting != "auto":
        return setting
    probe = probe_hailo()
    return probe.arch if probe.available else None


def policy_from_settings(bundles: BundleSettings, limits: LimitSettings) -> InstallPolicy:
    """The install policy a device's settings describe."""
    cap = limits.max_bundle_bytes
    return InstallPolicy(
        limits=Limits(max_member_bytes=cap, max_total_bytes=cap),
        device_arch=resolve_device_arch(bundles.device_arch),
        public_keys=tuple(load_public_keys(bundles.public_keys)),
        check_models=bundles.check_models,
    )
