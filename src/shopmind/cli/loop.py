"""The learning loop's roles: `ship-events` moves acknowledged serving events into the store."""

from __future__ import annotations

import threading
from typing import Any

import typer

from .common import _emit_json, _guard, app, err, out, state


@app.command("ship-events")
def ship_events(
    dataset: str = typer.Argument(..., help="The dataset whose serving event log to ship."),
    follow: bool = typer.Option(False, "--follow", help="Keep shipping new events until Ctrl-C."),
    every: float = typer.Option(1.0, "--every", min=0.05, help="Seconds between passes with --follow."),
    batch: int = typer.Option(5000, "--batch", min=1, max=1_000_000, help="Events per store transaction."),
    as_json: bool = typer.Option(False, "--json", help="Print the totals as JSON."),
) -> None:
    """Move acknowledged events from the serving event log into the store, each exactly once (resumable after
    a crash; forgotten shoppers never ship). One pass, or with --follow one pass every --every seconds."""
    from ..serving.shipper import ship

    def report(r: dict[str, Any]) -> None:
        if as_json:
            return
        if r.get("store_busy"):
            err.print("store busy, retrying")
            return
        err.print(f"shipped {r['shipped']:,} (duplicates {r['duplicates']:,}, forgotten {r['skipped_forgotten']:,}, "
                  f"unreadable {r['skipped_unreadable']:,}) · lag {r['lag_records']:,} records / "
                  f"{r['lag_bytes']:,} bytes · offset {r['offset']:,}", highlight=False)

    totals = _guard(lambda: ship(state.settings(), dataset, follow=follow, every_s=every, stop=threading.Event(),
                                 on_report=report, batch_records=batch))  # Ctrl-C ends --follow with the totals
    if as_json:
        _emit_json(totals)
        return
    out.print(f"{dataset}: {totals['shipped']:,} events shipped, {totals['duplicates']:,} duplicates, "
              f"{totals['skipped_forgotten']:,} of forgotten shoppers skipped; lag {totals['lag_records']:,} records",
              highlight=False)
