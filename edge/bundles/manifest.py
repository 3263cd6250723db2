"""The bundle manifest schema (manifest.json). A bundle describes itself: preprocessing, thresholds,
target arch and hashes travel with the models, so training, calibration and runtime share one spec."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge.errors import BundleSchemaError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"

HailoArch = Literal["hailo8l", "hailo8"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    """How raw uint8 RGB pixels become a model input. The ONE preprocessing spec (see edge/recognize/embed.py)."""

    height: int = Field(gt=0, description="Input height in pixels.")
    width: int = Field(gt=0, description="Input width in pixels.")
    layout: Literal["NCHW", "NHWC"] = Field("NCHW", description="Tensor layout of the input.")
    color_order: Literal["RGB", "BGR"] = Field(
        "RGB", description="Channel order the model expects."
    )
    dtype: Literal["float32", "uint8"] = Field("float32", description="Input element type.")
    mean: tuple[float, float, float] = Field(
        (0.0, 0.0, 0.0), description="Per-channel mean in 0-255 units, in color_order."
    )
    std: tuple[float, float, float] = Field(
        (255.0, 255.0, 255.0), description="Per-channel std in 0-255 units, in color_order."
    )
    resize: Literal["warp", "letterbox"] = Field(
        "warp",
        description="warp: the caller already produced height x width (rectified crops); "
        "letterbox: keep aspect, pad with 114, centred (detector).",
    )


class HefSpec(_Strict):
    """A Hailo executable compiled from the same model."""

    file: str = Field(description="HEF file name inside the bundle.")
    sha256: str = Field(description="sha256 of the HEF file, hex.")
    arch: HailoArch = Field(description="Target architecture the HEF was compiled for.")
    normalization_in_model: bool = Field(
        True, description="Mean/std are applied inside the HEF; the host feeds raw uint8 RGB NHWC."
    )
    output_names: tuple[str, ...] = Field((), description="Output stream names, in decode order.")
    latency_ms: float | None = Field(
        None, description="Measured or published latency per batch item."
    )


class ModelSpec(_Strict):
    file: str = Field(description="ONNX file name inside the bundle.")
    sha256: str = Field(description="sha256 of the ONNX file, hex.")
    input: InputSpec = Field(description="Preprocessing spec of the model input.")
    input_name: str = Field("images", description="ONNX input name.")
    output_name: str = Field(description="ONNX output name used by the runtime.")
    hef: HefSpec | None = Field(None, description="Optional compiled HEF for the Hailo backend.")
    arch: str = Field("", description="Architecture name (timm name, yolo11n-obb, ...).")


class DetectorSpec(ModelSpec):
    task: Literal["obb"] = Field("obb", description="Detector task; only oriented boxes.")
    num_classes: int = Field(1, ge=1, description="Number of detector classes.")
    class_names: tuple[str, ...] = Field(
        ("card",),
        description="Class names in class-id order: `card` (a card face) and, where the detector "
        "has it, `back` (a card lying face down, reported as a back, never as an unknown card).",
    )
    strides: tuple[int, ...] = Field((8, 16, 32), description="Head strides.")
    reg_max: int = Field(
        16, description="DFL bins of the box head (for host decode of cut graphs)."
    )

    @model_validator(mode="after")
    def _names_match_classes(self) -> DetectorSpec:
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"class_names has {len(self.class_names)} names for {self.num_classes} classes"
            )
        return self

    @property
    def back_class(self) -> int | None:
        """The class id of card backs, or None for a detector without one."""
        return self.class_names.index("back") if "back" in self.class_names else None


class EmbedderSpec(ModelSpec):
    embedding_dim: int = Field(gt=0, description="Output embedding dimension.")
    max_batch: int = Field(8, ge=1, description="Largest batch the exported graph accepts.")


class IndexSpec(_Strict):
    file: str = Field("index.usearch", description="usearch index file name.")
    sha256: str = Field(description="sha256 of the index file, hex.")
    metric: Literal["cos"] = Field("cos", description="Similarity metric.")
    dtype: Literal["f32", "f16", "i8"] = Field("f16", description="Stored vector type.")
    dim: int = Field(gt=0, description="Vector dimension; equals the embedder's.")
    count: int = Field(ge=0, description="Number of reference vectors.")


class CatalogueSpec(_Strict):
    file: str = Field("catalogue.sqlite", description="SQLite catalogue file name.")
    sha256: str = Field(description="sha256 of the catalogue file, hex.")
    name: str = Field(description="Human catalogue name, e.g. 'demo'.")
    card_count: int = Field(ge=0, description="Number of distinct cards.")


class Thresholds(_Strict):
    unknown_score: float = Field(0.5, description="Top-1 cosine below this -> unknown.")
    unknown_margin: float = Field(
        0.02, description="Margin to the best different card below this -> unknown."
    )
    det_conf: float = Field(0.25, ge=0, le=1, description="Detector confidence threshold.")
    det_iou: float = Field(0.7, ge=0, le=1, description="Rotated NMS IoU threshold (probiou).")
    max_det: int = Field(300, ge=1, description="Most detections kept per frame.")
    verify_min_inliers: int = Field(
        15, ge=4, description="Homography inliers a candidate needs to be `verified`."
    )
    verify_min_photometric: float = Field(
        0.5,
        ge=-1,
        le=1,
        description="Colour agreement (normalised cross-correlation with the "
        "reference under the homography) a verified candidate needs.",
    )
    verify_strong_inliers: int = Field(
        1000,
        ge=4,
        description="A candidate with at least this many inliers needs only "
        "verify_strong_photometric colour agreement (strong geometry under odd light).",
    )
    verify_strong_photometric: float = Field(
        1.0,
        ge=-1,
        le=1,
        description="Colour agreement enough for a candidate with verify_strong_inliers inliers.",
    )
    verify_distinct_inliers: int = Field(
        1000,
        ge=4,
        description="A third operating point: a candidate with at least this many inliers, "
        "verify_distinct_photometric colour agreement and verify_distinct_ratio times the "
        "inliers of every other candidate checked (the whole shortlist) is verified: few "
        "inliers, but nothing else in the catalogue maps onto the crop.",
    )
    verify_distinct_photometric: float = Field(
        1.0, ge=-1, le=1, description="Colour agreement the distinct operating point needs."
    )
    verify_distinct_ratio: float = Field(
        2.0,
        ge=1,
        description="How many times the inliers of the runner-up the distinct point needs.",
    )
    verify_spread_inliers: int = Field(
        1000,
        ge=4,
        description="A geometric operating point: a candidate with at least this many "
        "inliers spread over verify_spread_cells cells of the card (and "
        "verify_spread_photometric colour agreement) is verified, whatever the light does to "
        "its colours: a chance match clusters on a few shared template elements.",
    )
    verify_spread_cells: int = Field(
        48,
        ge=1,
        le=48,
        description="Cells of the 8 x 6 grid over the card the spread point's inliers must reach.",
    )
    verify_spread_photometric: float = Field(
        1.0, ge=-1, le=1, description="Colour agreement the spread operating point needs."
    )
    verify_framed_inliers: int = Field(
        1000,
        ge=4,
        description="A geometric operating point: a candidate with at least this many inliers, "
        "verify_framed_photometric colour agreement and a homography that maps the reference's "
        "outline onto the detector's box (IoU >= verify_framed_iou) is verified: a chance match "
        "on a shared template element maps the card askew.",
    )
    verify_framed_photometric: float = Field(
        1.0, ge=-1, le=1, description="Colour agreement the framed operating point needs."
    )
    verify_framed_iou: float = Field(
        1.0,
        ge=0,
        le=1,
        description="IoU of the mapped reference outline with the detector's box that the "
        "framed point needs.",
    )
    verify_shortlist: int = Field(
        10, ge=1, le=100, description="Candidates per card checked by verification."
    )
    verify_query_features: int | None = Field(
        None,
        ge=8,
        le=5000,
        description="Local features extracted from each crop (more than a reference keeps: "
        "a blurred, tilted or foil card still shares some with its scan); unset: the "
        "reference features' own count, as bundles calibrated before this setting.",
    )
    verify_min_px: float = Field(
        48.0,
        ge=0,
        description="Card short side (frame px) below which a crop is too small to "
        "verify; such cards may be `probable` on the embedding alone.",
    )
    verify_ambiguous: float = Field(
        0.4,
        gt=0,
        le=1,
        description="Candidates with at least this share of the best's inliers "
        "are compared with it where their references differ (same-art reprints).",
    )
    probable_score: float = Field(
        1.01,
        description="Embedding-only acceptance for crops too small to verify; above 1 "
        "never (the embedding's score alone is not trusted).",
    )
    probable_margin: float = Field(0.2, description="Margin needed for `probable`.")
    background_conf: float = Field(
        0.0,
        ge=0,
        le=1,
        description="A box that verifies against nothing is background, and "
        "dropped, below this detector confidence; above it, it is an unknown card.",
    )
    back_conf: float | None = Field(
        None,
        ge=0,
        le=1,
        description="A box of the detector's `back` class is reported as a card back at or "
        "above this confidence, and dropped below it; unset: `background_conf`.",
    )


class VerificationSpec(_Strict):
    """The reference local features that verification matches crops against."""

    file: str = Field("features.bin", description="Reference feature file name.")
    sha256: str = Field(description="sha256 of the feature file, hex.")
    method: Literal["orb"] = Field("orb", description="Local feature type.")
    n_features: int = Field(gt=0, description="Features extracted per crop.")
    height: int = Field(gt=0, description="Canvas height the card is warped to, px.")
    width: int = Field(gt=0, description="Canvas width the card is warped to, px.")
    cards: int = Field(ge=0, description="Cards with reference features.")
    keypoints: int = Field(ge=0, description="Reference keypoints in all.")


class FileEntry(_Strict):
    sha256: str = Field(description="sha256 of the file, hex.")
    size: int = Field(ge=0, description="File size in bytes.")


class Manifest(_Strict):
    schema_version: Literal[1] = Field(description="Manifest schema version.")
    bundle_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", description="Bundle id.")
    created: str = Field(description="ISO-8601 UTC creation time.")
    catalogue: CatalogueSpec
    detector: DetectorSpec
    embedder: EmbedderSpec
    index: IndexSpec
    thresholds: Thresholds = Field(default_factory=Thresholds)
    verification: VerificationSpec | None = Field(
        None, description="Reference local features; without them cards are never `verified`."
    )
    files: dict[str, FileEntry] = Field(
        default_factory=dict,
        description="Every file of the bundle except manifest.json and manifest.sig, with hash and size.",
    )
    selftest: dict[str, str] = Field(
        default_factory=dict, description="Self-test image file -> the card_id it must identify as."
    )
    lineage: dict[str, Any] = Field(
        default_factory=dict, description="Checkpoints, datasets, tools."
    )


def load_manifest(path: Path) -> Manifest:
    """Read and validate manifest.json; every problem becomes a BundleSchemaError."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise BundleSchemaError(
            f"no manifest at {path.name}", "a bundle needs manifest.json"
        ) from e
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleSchemaError(f"manifest is not valid JSON: {e}") from e
    if isinstance(raw, dict) and raw.get("schema_version") not in (None, SCHEMA_VERSION):
        raise BundleSchemaError(
            f"unknown manifest schema_version {raw.get('schema_version')!r}",
            f"this runtime reads schema_version {SCHEMA_VERSION}; upgrade cardedge",
        )
    try:
        return Manifest.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
        )
        raise BundleSchemaError(f"manifest invalid: {problems}") from e
