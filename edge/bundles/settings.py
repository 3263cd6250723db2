"""The `bundles` section of the runtime settings: retention, trusted signers, device arch policy.

Kept in its own light module (pydantic only) so edge/config.py can mount it without importing the
installer."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class BundleSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keep: int = Field(
        3, ge=1, description="Installed bundles kept by gc besides the current and previous ones."
    )
    public_keys: list[Path] = Field(
        default_factory=list,
        description="PEM Ed25519 public keys of trusted signers; when set, unsigned bundles and "
        "bundles signed by any other key are refused.",
    )
    device_arch: Literal["auto", "none", "hailo8l", "hailo8"] = Field(
        "auto",
        description="Hailo arch HEFs must fit: auto probes the device (none found: HEFs unchecked); "
        "none: never check.",
    )
    check_models: bool = Field(
        True, description="Open each ONNX model at install to check its names and output dimension."
    )
    selftest: bool = Field(
        True,
        description="Before a hot swap, each of the bundle's reference scans must identify as itself.",
    )
