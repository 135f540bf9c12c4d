"""Dataset registry: checksums of the real files, resolution order, verified downloads over loopback HTTP."""

from __future__ import annotations

import functools
import http.server
import socket
import threading
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from shopmind.data.registry import REGISTRY, DatasetError, FileSpec, fetch, get_spec, local_path, resolve, verify


@pytest.mark.parametrize("name", list(REGISTRY))
def test_registered_checksums_match_the_real_files(data_dir: Path, name: str) -> None:
    spec = REGISTRY[name]
    assert local_path(spec, data_dir, Path("/nonexistent")) == data_dir / name
    assert set(verify(data_dir / name, spec).values()) == {"ok"}


@pytest.fixture
def http_root(tmp_path: Path):
    """A static file server on 127.0.0.1 serving tmp_path/www."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_verifies_and_caches(tmp_path: Path, data_dir: Path, http_root) -> None:
    root, base = http_root
    with zipfile.ZipFile(root / "ml-100k.zip", "w") as z:
        for f in REGISTRY["ml-100k"].files:
            z.write(data_dir / "ml-100k" / f.name, f"ml-100k/{f.name}")
    spec = replace(REGISTRY["ml-100k"], files=tuple(replace(f, url=f"{base}/ml-100k.zip") for f in REGISTRY["ml-100k"].files))
    cache = tmp_path / "cache"
    folder = fetch(spec, cache)
    assert folder == cache / "ml-100k"
    assert set(verify(folder, spec).values()) == {"ok"}
    # Resolution prefers the data dir, then the cache; no download when present.
    got_spec, path = resolve("ml-100k", None, cache, allow_download=False)
    assert path == folder and got_spec.name == "ml-100k"


def test_checksum_mismatch_is_refused(tmp_path: Path, http_root) -> None:
    root, base = http_root
    (root / "data.txt").write_text("tampered")
    spec = replace(REGISTRY["s3rec-beauty"], files=(FileSpec("Beauty.txt", "0" * 64, f"{base}/data.txt"),))
    with pytest.raises(DatasetError, match="checksum mismatch"):
        fetch(spec, tmp_path / "cache")
    assert not (tmp_path / "cache" / "s3rec-beauty" / "Beauty.txt").exists()


def test_offline_gives_a_clear_message(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = replace(REGISTRY["s3rec-beauty"],
                   files=(FileSpec("Beauty.txt", "0" * 64, f"http://127.0.0.1:{port}/Beauty.txt"),))
    with pytest.raises(DatasetError, match="Offline\\? Put the files in"):
        fetch(spec, tmp_path / "cache")


def test_not_downloadable_and_unknown(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="cannot be downloaded"):
        fetch(REGISTRY["homedepot"], tmp_path)
    with pytest.raises(DatasetError, match="unknown dataset 'nope'"):
        get_spec("nope")
    with pytest.raises(DatasetError, match="downloads are off"):
        resolve("s3rec-beauty", tmp_path / "empty", tmp_path / "cache", allow_download=False)
