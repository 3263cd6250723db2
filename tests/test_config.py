"""edge.config: one TOML/YAML file plus CARDEDGE_* variables, strict validation with paths."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from edge.config import Settings, load_settings
from edge.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CARDEDGE_* variable from the developer's shell leaks into these tests."""
    import os

    for name in list(os.environ):
        if name.startswith("CARDEDGE_"):
            monkeypatch.delenv(name)


def test_defaults_without_a_file() -> None:
    s = load_settings()
    assert s.server.port == 8080 and s.runtime.backend == "auto" and s.limits.max_pixels > 0


def test_toml_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[server]\nport = 9001\n[runtime]\nbackend = "onnx"\n')
    s = load_settings(path)
    assert s.server.port == 9001 and s.runtime.backend == "onnx"


def test_yaml_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("limits:\n  max_pixels: 1000\n")
    assert load_settings(path).limits.max_pixels == 1000


def test_environment_wins_over_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # given a file setting the port and a variable setting another
    path = tmp_path / "c.toml"
    path.write_text("[server]\nport = 9001\n")
    monkeypatch.setenv("CARDEDGE_SERVER__PORT", "9002")
    # then the variable wins
    assert load_settings(path).server.port == 9002


def test_unknown_key_is_reported_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[server]\nprot = 1\n")
    with pytest.raises(ConfigError, match=r"server\.prot"):
        load_settings(path)


def test_out_of_range_value_is_reported_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("runtime:\n  top_k: 0\n")
    with pytest.raises(ConfigError, match=r"runtime\.top_k"):
        load_settings(path)


def test_unknown_extension_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.ini"
    path.write_text("[server]\n")
    with pytest.raises(ConfigError, match="extension"):
        load_settings(path)


def test_yaml_without_a_mapping_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(path)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "absent.toml")


def test_token_is_not_shown_in_repr(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[server]\ntoken = "s3cret-value"\n')
    s = load_settings(path)
    assert "s3cret-value" not in repr(s)
    assert s.server.token is not None and s.server.token.get_secret_value() == "s3cret-value"


def test_every_field_has_a_description() -> None:
    # given every section of the settings
    missing = []
    for section_name, section in Settings.model_fields.items():
        model = section.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        for name, field in model.model_fields.items():
            if not field.description:
                missing.append(f"{section_name}.{name}")
    # then none lacks a description (the config reference is generated from them)
    assert missing == []


def test_a_flag_wins_over_the_environment_and_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge.config import load_with_flags

    # given a file, a variable and a flag all setting the port, and the file alone setting host
    path = tmp_path / "c.toml"
    path.write_text('[server]\nport = 9001\nhost = "0.0.0.0"\n')
    monkeypatch.setenv("CARDEDGE_SERVER__PORT", "9002")
    # when loaded for a command
    s = load_with_flags(path, {"--port": (("server", "port"), 9000), "--host": (("server", "host"), None)})  # fmt: skip
    # then the flag wins; an unset flag leaves the file's value
    assert s.server.port == 9000 and s.server.host == "0.0.0.0"


def test_a_bad_flag_value_names_the_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    from edge.config import load_with_flags

    with pytest.raises(ConfigError, match=r"server\.port.*flag --port"):
        load_with_flags(None, {"--port": (("server", "port"), 70000)})


def test_a_bad_variable_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARDEDGE_RUNTIME__TOP_K", "0")
    with pytest.raises(ConfigError, match="variable CARDEDGE_RUNTIME__TOP_K"):
        load_settings()


def test_state_dir_defaults_per_user_when_not_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from edge import config

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert config.default_state_dir() == tmp_path / "xdg" / "cardedge"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert config.default_state_dir() == tmp_path / "home" / ".local" / "state" / "cardedge"
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert config.default_state_dir() == config.SYSTEM_STATE_DIR
