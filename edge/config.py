"""Runtime configuration: one TOML/YAML file plus CARDEDGE_* environment variables (pydantic-settings).

Nested sections map to variables with a double underscore: CARDEDGE_SERVER__PORT=8080.
Precedence, highest first: command-line flag > CARDEDGE_* variable > config file > default.
Sections belong to their subsystem; add fields to your section with a description each.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from edge.bundles.settings import BundleSettings
from edge.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


SYSTEM_STATE_DIR = Path("/var/lib/cardedge")


def default_state_dir() -> Path:
    """/var/lib/cardedge for root (the systemd unit sets it explicitly too); otherwise a per-user
    directory, $XDG_STATE_HOME/cardedge or ~/.local/state/cardedge, which the user can write."""
    if os.geteuid() == 0:
        return SYSTEM_STATE_DIR
    xdg = os.environ.get("XDG_STATE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "state"
    return base / "cardedge"


class RuntimeSettings(_Section):
    bundle: Path | None = Field(
        None, description="Bundle directory to serve; default: the store's current bundle."
    )
    state_dir: Path = Field(
        default_factory=default_state_dir,
        description="State directory: bundles/, current link, feedback/. Default: "
        "/var/lib/cardedge as root, else $XDG_STATE_HOME/cardedge or ~/.local/state/cardedge.",
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
    feature_shortlist: bool = Field(
        False,
        description="When none of the embedder's candidates verifies, also verify the candidates "
        "of an index over the reference features themselves (built at load: about 5 s and 72 MB "
        "at 17,600 cards); same thresholds. Off: on the bundles measured so far it found almost "
        "no card the embedder missed (README, Measurements).",
    )


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
        # First wins: explicit values (command-line flags, or Settings(...) in code), then
        # CARDEDGE_* variables, then the config file that load_settings is reading.
        return (init_settings, env_settings, _FileSource(settings_cls), file_secret_settings)


_FILE_DATA: ContextVar[Mapping[str, Any] | None] = ContextVar("cardedge_config_file", default=None)


class _FileSource(PydanticBaseSettingsSource):
    """The config file's values, below the environment (set by load_settings for one call)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return (_FILE_DATA.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_FILE_DATA.get() or {})


@contextmanager
def _file_values(data: Mapping[str, Any]) -> Iterator[None]:
    token = _FILE_DATA.set(data)
    try:
        yield
    finally:
        _FILE_DATA.reset(token)


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


def env_name(loc: tuple[str, ...]) -> str:
    """The CARDEDGE_* variable that sets a dotted setting: ("server", "port") -> CARDEDGE_SERVER__PORT."""
    return "CARDEDGE_" + "__".join(p.upper() for p in loc)


def _origin(loc: tuple[str, ...], flags: Mapping[tuple[str, str], str], path: Path | None) -> str:
    """Where a bad value came from, so the message names what the user must change."""
    key = (loc[0], loc[1]) if len(loc) >= 2 else None
    if key is not None and key in flags:
        return f"flag {flags[key]}"
    if len(loc) >= 2 and env_name(loc[:2]) in os.environ:
        return f"variable {env_name(loc[:2])}"
    return f"config file {path}" if path else "defaults"


def load_settings(
    path: Path | None = None,
    *,
    flags: Mapping[tuple[str, str], str] | None = None,
    **overrides: Any,
) -> Settings:
    """Settings from an optional file, CARDEDGE_* variables and explicit overrides (CLI flags):
    flag > environment > file > default. `flags` names the flag behind each override, e.g.
    {("server", "port"): "--port"}, so that a bad value's error says which flag to fix."""
    data: dict[str, Any] = read_config_file(path) if path else {}
    given = {k: v for k, v in overrides.items() if v}
    try:
        with _file_values(data):
            return Settings(**given)
    except ValidationError as e:
        flags = flags or {}
        lines = [
            f"{problem} (from {_origin(tuple(str(p) for p in err['loc']), flags, path)})"
            for problem, err in zip(format_validation_error(e), e.errors(), strict=True)
        ]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from e


def load_with_flags(
    path: Path | None, flags: Mapping[str, tuple[tuple[str, str], Any]]
) -> Settings:
    """load_settings for a command: `flags` maps each flag to its setting and parsed value, e.g.
    {"--port": (("server", "port"), 9000)}; flags left unset (None) fall through to the
    environment, the file and the defaults."""
    overrides: dict[str, dict[str, Any]] = {}
    names: dict[tuple[str, str], str] = {}
    for flag, ((section, field), value) in flags.items():
        if value is not None:
            overrides.setdefault(section, {})[field] = value
            names[(section, field)] = flag
    return load_settings(path, flags=names, **overrides)
