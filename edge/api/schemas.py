"""Response models of the HTTP API (requests are images or query parameters, validated in place)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Polygon = list[list[float]]  # 4 x [x, y] pixels, clockwise from the card's top-left


class ErrorOut(BaseModel):
    code: str = Field(description="Stable machine-readable error code.")
    message: str = Field(description="What went wrong, for a human.")
    hint: str | None = Field(None, description="How to fix it, when known.")


class HealthOut(BaseModel):
    status: str = Field(description="Always 'ok' while the process serves HTTP.")


class ReadyOut(BaseModel):
    ready: bool = Field(description="Bundle loaded, backends warm, camera delivering (if any).")
    checks: dict[str, str] = Field(description="Per check: 'ok...' or why it fails.")


class NotReadyOut(ErrorOut):
    checks: dict[str, str] = Field(description="Per check: 'ok...' or why it fails.")


class CardOut(BaseModel):
    card_id: str
    name: str
    set_id: str
    set_name: str
    number: str
    rarity: str
    image_ref: str | None = None


class CardsOut(BaseModel):
    query: str
    cards: list[CardOut]


class CandidateOut(BaseModel):
    card_id: str
    score: float
    name: str | None = None


class IdentifiedCardOut(BaseModel):
    """One card in an uploaded image: what it is and where."""

    card_id: str | None = Field(description="Best card id; null when judged unknown.")
    best_card_id: str = Field(description="Nearest catalogue card even when unknown.")
    name: str | None = None
    set_id: str | None = None
    set_name: str | None = None
    number: str | None = None
    rarity: str | None = None
    score: float = Field(description="Cosine similarity of the best reference.")
    margin: float = Field(description="Best score minus the best score of a different card.")
    known: bool = Field(description="True for `verified` and `probable` cards.")
    confidence: Literal["verified", "probable", "unknown", "back"] = Field(
        description="verified: local features map onto the reference under one homography; "
        "probable: embedding only (too small or blurred to verify); unknown: neither; "
        "back: a card lying face down (a detector with a back class)."
    )
    inliers: int = Field(description="Homography inliers of the reported card (0: not verified).")
    reason: str = Field(
        description="Why the card is probable or unknown; empty when verified, `taught view "
        "<view_id>` when verified against a view taught on this device (GET /v1/overlay)."
    )
    runner_up: str | None = Field(
        description="A second card that verified nearly as well (same-art reprint), or null."
    )
    det_conf: float = Field(description="Detector confidence.")
    polygon: Polygon
    top_k: list[CandidateOut]


class IdentifyOut(BaseModel):
    bundle_id: str
    width: int
    height: int
    cards: list[IdentifiedCardOut]
    timings_ms: dict[str, float]


class SceneCardOut(BaseModel):
    track_id: int
    card_id: str | None
    name: str | None
    set_name: str | None
    number: str | None
    score: float
    known: bool
    identified: bool = Field(description="The track's vote has settled (known or unknown).")
    det_conf: float = Field(description="Detector confidence.")
    polygon: Polygon
    confidence: Literal["verified", "probable", "unknown", "back"] = Field(
        "unknown",
        description="verified: the track's card was proven by geometry; probable: "
        "known on the embedding alone; unknown: neither; back: a card lying face down.",
    )


class SceneOut(BaseModel):
    bundle_id: str | None
    frame_id: int | None
    t_capture: float | None
    width: int
    height: int
    source: str | None
    cards: list[SceneCardOut]


class BackendOut(BaseModel):
    role: str
    reason: str = Field(description="Which backend runs this model and why.")


class LiveOut(BaseModel):
    uri: str
    state: str
    ready: bool
    reason: str
    fps: float
    capture_fps: float
    frames: int
    dropped: int
    stale: int = Field(
        0, description="Detected frames dropped because a bundle swap retired their bundle."
    )
    restarts: int
    embeddings_per_frame: float
    stage_ms: dict[str, float]


class StoreOut(BaseModel):
    state_dir: str = Field(description="State directory: bundle store, uploads, feedback.")
    writable: bool = Field(description="Bundle uploads and feedback can be stored.")
    reason: str | None = Field(None, description="Why not writable.")
    hint: str | None = Field(None, description="How to make it writable.")


class VerificationOut(BaseModel):
    """Whether the bundle proves identifications by geometry, or decides on the embedding alone."""

    enabled: bool = Field(
        description="The bundle carries reference features: cards can be verified."
    )
    reason: str | None = Field(None, description="Why not, when not enabled.")
    method: str | None = Field(None, description="Local feature type (orb).")
    n_features: int | None = Field(None, description="Features a reference keeps at most.")
    query_features: int | None = Field(
        None, description="Features extracted from each card's crop to match them against."
    )
    cards: int | None = Field(None, description="Cards with reference features.")
    keypoints: int | None = Field(None, description="Reference keypoints in all.")
    min_inliers: int | None = Field(
        None, description="Inliers a candidate needs (first operating point)."
    )


class OverlayStatusOut(BaseModel):
    views: int = Field(description="Views taught on this device (GET /v1/overlay).")
    cards: int = Field(description="Distinct cards among them.")


class StatusOut(BaseModel):
    version: str
    bundle_id: str | None
    catalogue: str | None
    card_count: int | None
    backends: list[BackendOut]
    camera: LiveOut | None
    ready: bool
    checks: dict[str, str]
    store: StoreOut
    verification: VerificationOut | None = Field(
        None, description="The current bundle's verification stage; null without a bundle."
    )
    overlay: OverlayStatusOut | None = Field(
        None, description="Taught views served with the bundle; null: state directory read-only."
    )
