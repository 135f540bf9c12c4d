"""Remove a user from the knowledge folder `<store>.knowledge/<dataset>/` that `shopmind mine` writes.

Per-user files there: `ids.json` (its "users" list) and the row-aligned `users_tfidf.npz` (and any other
`users*.npz` / `users*.npy` with one row per user). Everything else in the folder is per item. The other
per-user knowledge lives in the store: the `user_profiles` table (removed by `Store.forget_user`, which
covers every table with a user_id column); the embedding cache is keyed by text hash (item texts and
keyword candidates), so it holds no row for a user. Knowledge cards quote review sentences as aspect
snippets: `scrub_card` blanks those taken from a forgotten user's reviews (cards in the store and artifact).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp

from ..data.forget import replace_file
from ..data.store import Store


def _drop_rows(path: Path, keep: np.ndarray) -> bool:
    """Rewrite a per-user matrix without the rows not kept; False when its row count does not match."""
    if path.suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
        if arr.shape[:1] != keep.shape:
            return False
        buf = io.BytesIO()
        np.save(buf, arr[keep])
    else:
        try:
            m = sp.load_npz(path).tocsr()
        except (ValueError, KeyError):
            return False
        if m.shape[0] != len(keep):
            return False
        buf = io.BytesIO()
        sp.save_npz(buf, m[np.flatnonzero(keep)])
    replace_file(path, lambda f: f.write(buf.getvalue()))
    return True


def forget_user(knowledge_dir: str | Path, user_ids: str | Sequence[str],
                datasets: Sequence[str] | None = None) -> dict[str, dict[str, int]]:
    """Remove the user (every stored form of the id: clear, hashed) from each dataset folder (all when
    `datasets` is None); files are rewritten atomically. Returns {dataset: {file: rows removed}}."""
    forms = {user_ids} if isinstance(user_ids, str) else set(user_ids)
    root = Path(knowledge_dir)
    out: dict[str, dict[str, int]] = {}
    if not root.is_dir():
        return out
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if datasets is not None and folder.name not in datasets:
            continue
        ids_path = folder / "ids.json"
        if not ids_path.is_file():
            continue
        ids = json.loads(ids_path.read_text())
        users = [str(u) for u in ids.get("users", [])]
        keep = np.array([u not in forms for u in users], dtype=bool)
        if keep.all():
            continue
        removed = int((~keep).sum())
        done: dict[str, int] = {}
        for path in sorted(folder.glob("users*.np[yz]")):
            if _drop_rows(path, keep):
                done[path.name] = removed
        ids["users"] = [u for u, k in zip(users, keep) if k]
        data = json.dumps(ids).encode()
        replace_file(ids_path, lambda f, data=data: f.write(data))
        done["ids.json"] = removed
        out[folder.name] = done
    return out


def scrub_card(card: dict[str, Any], texts: Sequence[str]) -> bool:
    """Blank the aspect snippets quoted from any of `texts` (the user's reviews); returns whether any was."""
    changed = False
    for key in ("positive_aspects", "negative_aspects"):
        for aspect in card.get(key) or []:
            snippet = aspect.get("snippet") if isinstance(aspect, dict) else None
            quote = snippet.rstrip("…").strip() if isinstance(snippet, str) else ""
            if quote and any(quote in t for t in texts):
                aspect["snippet"], changed = None, True
    return changed


def forget_reviews(store: Store, texts: Sequence[str], dataset: str | None = None) -> int:
    """Scrub the store's knowledge cards (`dataset`, or all) of snippets quoted from `texts`; returns cards changed."""
    tables = store.tables()
    if not texts or "knowledge_cards" not in tables:
        return 0
    rows = store.con.execute("SELECT dataset, item_id, card FROM knowledge_cards"
                             + (" WHERE dataset = ?" if dataset else ""), [dataset] if dataset else []).fetchall()
    updates = []
    for ds, item, raw in rows:
        card = json.loads(raw)
        if scrub_card(card, texts):
            updates.append([json.dumps(card, ensure_ascii=False), ds, item])
    if updates:
        with store.transaction():
            store.con.executemany("UPDATE knowledge_cards SET card = ? WHERE dataset = ? AND item_id = ?", updates)
    return len(updates)
