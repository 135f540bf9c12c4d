"""The tombstone registry: keyed digests only, dataset scopes, and other instances see new tombstones."""

from __future__ import annotations

from pathlib import Path

from shopmind.data.tombstones import Tombstones


def test_scopes_reload_and_no_clear_ids(tmp_path: Path) -> None:
    a, b = Tombstones(tmp_path / "p"), Tombstones(tmp_path / "p")
    assert "u1" not in b and b.matcher("d1") is None and not (tmp_path / "p").exists()
    a.add("u1")
    a.add("u2", "d1")
    assert "u1" in b and b.is_forgotten("u1", "d2")  # everywhere
    assert b.is_forgotten("u2", "d1") and not b.is_forgotten("u2", "d2") and "u2" in b
    assert b.digests("d2") == {a.digest("u1")} and len(b.digests()) == 2 == len(b)
    match = b.matcher("d1")
    assert match is not None and match("u2") and not match("u3")
    assert a.digest("u1") == b.digest("u1") != Tombstones(tmp_path / "other").digest("u1")  # keyed per registry
    text = (tmp_path / "p" / "tombstones.jsonl").read_bytes()
    assert b"u1" not in text and b"u2" not in text
