"""The learning loop's roles: `ship-events` moves acknowledged serving events into the store; `trainer`
retrains on them and promotes what is not worse."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Optional

import typer

from .common import _emit_json, _guard, app, err, out, state, status


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


@app.command("trainer")
def trainer(
    dataset: str = typer.Argument(..., help="The dataset whose served artifact to keep fresh."),
    artifact_dir: Optional[Path] = typer.Option(None, "--artifact", help="The served artifact folder (default: "
                                                "<store>.artifacts/<dataset>); trained here first when missing."),
    every_events: int = typer.Option(1000, "--every-events", min=1, help="Retrain after this many new events ..."),
    every_minutes: float = typer.Option(10.0, "--every-minutes", min=0.0, help="... or this long after the last "
                                        "run when any event is new."),
    full_every_minutes: float = typer.Option(60.0, "--full-every-minutes", min=0.0, help="Retrain the neural "
                                             "sources and the ranker at most this often (0: every run); other runs "
                                             "refit the cheap sources only."),
    cheap: str = typer.Option("pop,itemknn", "--cheap", help="Sources a cheap run refits."),
    gate: str = typer.Option("point", "--gate", help="point (candidate NDCG@10 >= served - margin), noninferior "
                             "(the 95 % interval of the difference above -margin) or off."),
    margin: float = typer.Option(0.0, "--margin", min=0.0, max=1.0, help="Tolerance of the gate (NDCG@10)."),
    holdout: float = typer.Option(0.5, "--holdout", min=0.01, max=0.99, help="The newest share of the new events "
                                  "that judges a candidate."),
    min_cases: int = typer.Option(30, "--min-cases", min=1, help="Wait for at least this many held-out cases."),
    every: float = typer.Option(5.0, "--every", min=0.1, help="Seconds between shipping passes."),
    once: Optional[str] = typer.Option(None, "--once", help="Run one training now (cheap or full) and exit."),
    as_json: bool = typer.Option(False, "--json", help="With --once: print the result as JSON."),
) -> None:
    """The trainer role: ship served events into the store, retrain on a schedule, judge each candidate on
    the newest events against the served artifact and promote it (hot reload of every worker) only when it
    is not worse. Runs until Ctrl-C; status in <state_dir>/<dataset>/trainer.json (docs/loop.md)."""
    from ..serving.trainer import Trainer, TrainerConfig
    from .common import _artifact_dir

    def body() -> dict[str, Any] | None:
        if once not in (None, "cheap", "full"):
            raise ValueError(f"--once must be cheap or full, not {once!r}")
        settings = state.settings()
        config = TrainerConfig(every_events=every_events, every_s=every_minutes * 60,
                               full_every_s=full_every_minutes * 60,
                               cheap=tuple(x.strip() for x in cheap.split(",") if x.strip()), gate=gate,
                               margin=margin, holdout_share=holdout, min_cases=min_cases, poll_s=every)
        folder = artifact_dir or _artifact_dir(settings, dataset)
        with status("trainer …") as shown:
            t = Trainer(settings, dataset, folder, config, on_step=lambda m: shown.update(f"trainer {dataset}: {m}"))
            try:
                if once:
                    return t.run_once(once, ship=True)
                err.print(f"trainer for {dataset}: {folder}; status in {t.status_path}", highlight=False)
                stop = threading.Event()
                try:
                    t.loop(stop)
                except KeyboardInterrupt:
                    stop.set()
            finally:
                t.close()
        return None

    result = _guard(body, (ValueError,))
    if result is None:
        return
    if as_json:
        _emit_json(result)
        return
    line = f"{dataset}: {result['kind']} run {result.get('outcome')} in {result['seconds']:.0f} s"
    if "candidate" in result:
        line += (f"; NDCG@10 candidate {result['candidate']['ndcg@10']:.4f} vs served "
                 f"{result['serving']['ndcg@10']:.4f} on {result['cases']:,} held-out cases")
    if result.get("error") or result.get("reason"):
        line += f" ({result.get('error') or result.get('reason')})"
    out.print(line, highlight=False)
    if result.get("outcome") == "failed":
        raise typer.Exit(1)
