"""Runtime configuration: one TOML/YAML file plus CARDEDGE_* environment variables (pydantic-settings).

Nested sections map to variables with a double underscore: CARDEDGE_SERVER__PORT=8080.
Sections belong to their subsystem; add fields to your section with a description each.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from edge.bundle_settings import BundleSettings
from edge.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RuntimeSettings(_Section):
    bundle: Path | None = Field(
        None, description="Bundle directory to serve; default: the store's current bundle."
    )
    state_dir: Path = Field(
        Path("/var/lib/cardedge"), description="State directory: bundles/, current link, feedback/."
    )
    backend: Literal["auto", "onnx", "hailo"] = Field(
        "auto", description="auto: Hailo where a device and a matching HEF exist, else ONNX."
    )
    onnx_threads: int = Field(0, ge=0, description="ONNX Runtime intra-op threads; 0 = all cores.")
    onnx_spinning: bool = Field(
        False,
        description=(
            "Let ONNX Runtime's worker threads spin after a run. Off: on a few cores the spinning "
            "workers take the CPU from the host work (decode, rectify, search) that follows."
        ),
    )
    top_k: int = Field(5, ge=1, le=50, description="Candidates returned per card.")


class LimitSettings(_Section):
    max_upload_bytes: int = Field(
        20 * 1024 * 1024, gt=0, description="Largest accepted image upload, in bytes."
    )
    max_pixels: int = Field(
        40_000_000, gt=0, description="Largest accepted image, in pixels, read from the header."
    )
    max_bundle_bytes: int = Field(
        512 * 1024 * 1024, gt=0, description="Largest accepted bundle upload, in bytes."
    )


class ServerSettings(_Section):
    host: str = Field("127.0.0.1", description="Bind address; 0.0.0.0 opens the API to the LAN.")
    port: int = Field(8080, ge=1, le=65535, description="TCP port.")
    token: SecretStr | None = Field(
        None, description="Bearer token guarding writes (and reads when protect_reads)."
    )
    token_file: Path | None = Field(
        None, description="File holding the token (systemd LoadCredential); wins over token."
    )
    protect_reads: bool = Field(False, description="Require the token for reads too.")


class SourceSettings(_Section):
    uri: str | None = Field(
        None,
        description="Frame source: picamera2:, v4l2:0, rtsp://..., file:video.mp4, dir:photos/, "
        "synthetic:. None: no live camera (identify only).",
    )
    fps: float = Field(30.0, gt=0, description="Requested capture rate.")
    width: int = Field(1280, gt=0, description="Capture width.")
    height: int = Field(720, gt=0, description="Capture height.")


class HailoSettings(_Section):
    """Hailo-8/8L backend (HailoRT 4.x). One VDevice per process, shared by every model."""

    multi_process_service: bool = Field(
        False,
        description="Share the chip with other processes through hailort_service "
        "(needs the service running); off: this process owns the device.",
    )
    group_id: str = Field(
        "SHARED", description="VDevice group id; processes sharing one chip use the same id."
    )
    timeout_ms: int = Field(
        1000, gt=0, description="Longest wait for one inference before it counts as a timeout."
    )
    output_format: Literal["float32", "uint8"] = Field(
        "float32",
        description="float32: HailoRT dequantises outputs; uint8: the host dequantises "
        "(q - zero_point) * scale from the stream's quant info.",
    )
    max_restarts: int = Field(
        3, ge=0, description="Backend restarts after timeouts before the error is final."
    )


class Settings(BaseSettings):
    """Everything the device runtime reads at start-up."""

    model_config = SettingsConfigDict(
        env_prefix="CARDEDGE_", env_nested_delimiter="__", extra="forbid"
    )

    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    source: SourceSettings = Field(default_factory=SourceSettings)
    hailo: HailoSettings = Field(default_factory=HailoSettings)
    bundles: BundleSettings = Field(default_factory=BundleSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment variables win over the file (passed as init kwargs), as operators expect.
        return (env_settings, init_settings, file_secret_settings)


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse a TOML or YAML config file into a dict (no validation)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from e
    try:
        if path.suffix == ".toml":
            data: Any = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(
                f"config file {path} has unknown extension {path.suffix!r}", "use .toml or .yaml"
            )
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"config file {path} does not parse: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def format_validation_error(e: ValidationError) -> list[str]:
    """One line per problem, with its dotted path: 'server.port: Input should be <= 65535'."""
    return [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()]


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Settings from an optional file, CARDEDGE_* variables and explicit overrides (CLI flags)."""
    data: dict[str, Any] = read_config_file(path) if path else {}
    for section, values in overrides.items():
        data.setdefault(section, {}).update(values)
    try:
        return Settings(**data)
    except ValidationError as e:
        raise ConfigError(
            "invalid configuration:\n  " + "\n  ".join(format_validation_error(e))
        ) from e
