"""Loading a bundle's parts for the Recognizer: a backend per model, the verification stage.

Apart from edge.recognize.recognizer so that the Recognizer's module stays about recognition.
"""

from __future__ import annotations

import logging
from pathlib import Path

from edge.backends import Backend
from edge.backends.select import Role, select_backend
from edge.bundles.errors import BundleModelError
from edge.bundles.manifest import Manifest, ModelSpec
from edge.config import HailoSettings, RuntimeSettings
from edge.recognize.feature_file import ReferenceFeatures
from edge.recognize.index import Catalogue
from edge.recognize.shortlist import FeatureShortlist
from edge.recognize.verify_stage import VerifyStage

logger = logging.getLogger(__name__)


def load_backends(
    bundle_dir: Path, manifest: Manifest, settings: RuntimeSettings, hailo: HailoSettings | None
) -> tuple[dict[str, Backend], dict[str, str]]:
    """Pick and load a backend per model; close what was loaded if the second one fails."""
    loaded: dict[str, Backend] = {}
    reasons: dict[str, str] = {}
    try:
        models: tuple[tuple[Role, ModelSpec], ...] = (
            ("detector", manifest.detector),
            ("embedder", manifest.embedder),
        )
        for role, spec in models:
            backend, reason = select_backend(role, spec, bundle_dir, settings, hailo=hailo)
            loaded[role], reasons[role] = backend, reason
    except BaseException:
        for backend in loaded.values():
            backend.close()
        raise
    return loaded, reasons


def load_verification(
    bundle_dir: Path, manifest: Manifest, catalogue: Catalogue, *, feature_shortlist: bool = False
) -> VerifyStage | None:
    """The bundle's reference features, checked against its manifest and catalogue, and (with
    `feature_shortlist`) the inverted index over them that widens a shortlist that fails."""
    spec = manifest.verification
    if spec is None:
        logger.warning("bundle %s has no reference features: no verification", manifest.bundle_id)
        return None
    refs = ReferenceFeatures(bundle_dir / spec.file)
    got = refs.spec
    if (got.method, got.height, got.width) != (spec.method, spec.height, spec.width):
        raise BundleModelError(
            f"{spec.file} was built as {got.method} on {got.height}x{got.width}, the manifest "
            f"says {spec.method} on {spec.height}x{spec.width}",
            "rebuild the bundle's verification features",
        )
    refs.check_cards(sorted(set(catalogue.key_card_ids.tolist())))
    stage = VerifyStage(refs, manifest.thresholds, printings=catalogue.printings())
    if feature_shortlist and refs.spec.method == "orb":
        stage.more = FeatureShortlist.from_references(refs)
    return stage
