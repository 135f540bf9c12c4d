"""Forget a user everywhere shopmind keeps data about them: tombstone, store, rejects, knowledge, artifacts.

`shopmind forget USER` runs it offline; the server's `DELETE /users/{id}` calls it next to its own event log
and in-memory state (which this module leaves to the service). Judgments (`judgments` table) have no user
column and search tuning is learned from judgments only, so neither holds anything about a user.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

from ..config import Settings
from ..data.forget import compact_store, scrub_rejects_files, vacuum_store
from ..data.store import Store, StoreError, open_store, user_id_forms
from ..data.tombstones import Tombstones
from ..knowledge.forget import forget_reviews
from ..knowledge.forget import forget_user as forget_in_knowledge
from . import artifact


def artifacts_root(settings: Settings) -> Path:
    """Where `shopmind train` puts artifacts by default: <store>.artifacts/<dataset>."""
    return settings.store.path.with_name(settings.store.path.name + ".artifacts")


def _artifact_folders(settings: Settings, datasets: Sequence[str] | None, extra: Sequence[Path]) -> list[Path]:
    root = artifacts_root(settings)
    found = [p for p in sorted(root.iterdir()) if p.is_dir()] if root.is_dir() else []
    # Half-written (<name>.tmp) and replaced (<name>.old-N) folders hold users too.
    chosen = [p for p in found if datasets is None or re.sub(r"\.(tmp|old-\d+)$", "", p.name) in datasets]
    return list(dict.fromkeys([*chosen, *map(Path, extra)]))


def forget_everywhere(settings: Settings, user_id: str, datasets: Sequence[str] | None = None,
                      artifacts: Sequence[str | Path] = (), compact: bool = True,
                      event_logs: bool = True) -> dict[str, Any]:
    """Record the tombstone, then remove the user (the id as given and, when ingest.user_id_salt is set, the
    keyed hash ingest stores) from the store, the rejects files, the knowledge folder and every artifact
    under <store>.artifacts/ (plus `artifacts`). `datasets`: only these (None: all). A store locked by
    another process is reported as "pending": the tombstone makes the next ingest or train purge it.
    `compact`: rebuild the store file afterwards so the deleted bytes are gone too (time ~ store size).
    Knowledge-card snippets quoted from the user's reviews are blanked (store "knowledge_cards" count, artifacts).
    Returns {"tombstone": digest, "datasets": [...] | None, "store": {table: rows} | "pending" | "missing",
    "store_compacted": bool, "rejects_files": lines, "knowledge": {dataset: {file: rows}},
    "artifacts": {folder: bool}, "event_logs": {dataset: events removed}}. `event_logs`: also erase the user
    from the serving event logs in serving.state_dir (running servers see the rewrite and rebuild their
    state; the server's own DELETE /users/{id} has done its log already and passes False)."""
    if not user_id or not str(user_id).strip():
        raise ValueError("give the id of the user to forget")
    salt = settings.ingest.user_id_salt  # set when ids were (or may have been) hashed at ingest
    forms = user_id_forms(user_id, salt)
    tombstones = Tombstones(settings.privacy_dir)
    scopes: list[str | None] = list(datasets) if datasets else [None]
    for scope in scopes:
        for form in forms:  # the hashed form too, so that a pending purge recognises stored hashed ids
            tombstones.add(form, scope)
    report: dict[str, Any] = {"tombstone": tombstones.digest(user_id), "datasets": list(datasets) if datasets else None}
    path = Path(settings.store.path)
    texts: list[str] = []  # the user's reviews, read before the store forgets them (none when it is locked)
    report["store_compacted"] = False
    if not settings.store.url and not path.is_file():
        report["store"] = "missing"
    else:
        try:
            with open_store(settings) as store:
                texts = _review_texts(store, forms, datasets)
                totals: dict[str, int] = {}
                for scope in scopes:
                    for table, n in store.forget_user(user_id, scope, salt).items():
                        totals[table] = totals.get(table, 0) + n
                    totals["knowledge_cards"] = totals.get("knowledge_cards", 0) + forget_reviews(store, texts, scope)
                report["store"] = totals
        except StoreError:
            report["store"] = "pending"
        if compact and report["store"] != "pending":
            try:
                report["store_compacted"] = vacuum_store(settings.store.url) if settings.store.url \
                    else compact_store(path)
            except StoreError:  # taken by another process meanwhile: the next forget (or a rebuild) compacts
                pass
    report["rejects_files"] = sum(scrub_rejects_files(settings.rejects_dir, forms, scope) for scope in scopes)
    report["knowledge"] = forget_in_knowledge(settings.knowledge_dir, forms, datasets)
    report["artifacts"] = {str(folder): artifact.forget_user(folder, user_id, forms)
                           for folder in _artifact_folders(settings, datasets, [Path(a) for a in artifacts])}
    for folder in report["artifacts"]:
        artifact.scrub_review_snippets(folder, texts)
    report["event_logs"] = _forget_in_event_logs(settings, user_id, datasets) if event_logs else {}
    return report


def _forget_in_event_logs(settings: Settings, user_id: str, datasets: Sequence[str] | None) -> dict[str, int]:
    """Erase the user from each dataset's serving event log (a hashed tombstone stays in it)."""
    from .eventlog import EventLog
    from .shared import log_url, open_event_log

    out: dict[str, int] = {}
    url = log_url(settings)
    if url:
        from .pglog import logged_datasets

        for name in logged_datasets(url):
            if datasets is None or name in datasets:
                plog = open_event_log(settings, name)
                try:
                    out[name] = plog.forget(user_id)
                finally:
                    plog.close()
        return out
    state_dir = settings.state_dir
    if not Path(state_dir).is_dir():
        return out
    for folder in sorted(p for p in Path(state_dir).iterdir() if (p / "events.jsonl").is_file()):
        if datasets is None or folder.name in datasets:
            log = EventLog(folder)
            try:
                out[folder.name] = log.forget(user_id)
            finally:
                log.close()
    return out


def _review_texts(store: Store, forms: Sequence[str], datasets: Sequence[str] | None) -> list[str]:
    """The user's review texts and summaries (knowledge cards may quote sentences of them)."""
    rows = store.con.execute(
        "SELECT review_text, summary FROM events WHERE user_id = ANY(?)"
        + (" AND dataset = ANY(?)" if datasets else ""), [list(forms)] + ([list(datasets)] if datasets else [])
    ).fetchall()
    return [t for r in rows for t in r if t]
