"""Configuration precedence: packaged defaults < TOML file < environment < command-line overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from shopmind.config import ConfigError, load_settings


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings(environ={})
    assert s.store.path == Path("shopmind.duckdb") and s.ingest.chunk_size == 50_000
    assert s.data.dir is None and s.rejects_dir == Path("shopmind.duckdb.rejects")


def test_precedence(tmp_path: Path) -> None:
    cfg = tmp_path / "shop.toml"
    cfg.write_text('[store]\npath = "file.duckdb"\n[ingest]\nchunk_size = 1000\n[data]\ndir = "/from/file"\n')
    env = {"SHOPMIND_INGEST_CHUNK_SIZE": "2000", "SHOPMIND_DATA_DIR": "/from/env"}
    s = load_settings(cfg, {"data.dir": "/from/flag"}, environ=env)
    assert s.store.path == Path("file.duckdb")    # file over default
    assert s.ingest.chunk_size == 2000             # env over file
    assert s.data.dir == Path("/from/flag")        # flag over env


def test_config_file_from_env_and_secret_masked(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[ingest]\nhash_user_ids = true\nuser_id_salt = "pepper"\n')
    s = load_settings(environ={"SHOPMIND_CONFIG": str(cfg)})
    assert s.ingest.user_id_salt == "pepper"
    assert s.public_dict()["ingest"]["user_id_salt"] == "***"
    assert "pepper" not in repr(s)


@pytest.mark.parametrize("text,match", [
    ("[stor]\npath = 'x'\n", "unknown section"),
    ("[store]\npth = 'x'\n", "unknown key store.pth"),
    ("[ingest]\nchunk_size = 0\n", "invalid setting ingest.chunk_size"),
    ("[store\n", "invalid TOML"),
])
def test_bad_config(tmp_path: Path, text: str, match: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_settings(cfg, environ={})


def test_bad_env_value() -> None:
    with pytest.raises(ConfigError, match="ingest.chunk_size"):
        load_settings(environ={"SHOPMIND_INGEST_CHUNK_SIZE": "lots"})
