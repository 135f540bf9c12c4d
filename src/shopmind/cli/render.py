"""Tables and lines the commands print: ingest reports, dataset statistics, mining reports."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.table import Table

from .common import out

if TYPE_CHECKING:
    from ..data.ingest import IngestReport

_STAT_COLUMNS = [("users", "users"), ("items", "items"), ("interacted_items", "items w/ events"),
                 ("events", "events"), ("judgments", "judgments"), ("queries", "queries"),
                 ("rejected_last_run", "rejected")]


def _print_report(r: IngestReport) -> None:
    table = Table(title=f"ingest {r.dataset} (run {r.run_id}, {r.format}): {r.status}")
    for col in ("kind", "inserted", "updated", "unchanged", "rejected"):
        table.add_column(col, justify="right" if col != "kind" else "left")
    for kind, c in r.counts.items():
        table.add_row(kind, *(f"{c[k]:,}" for k in ("inserted", "updated", "unchanged", "rejected")))
    out.print(table)
    out.print(f"{r.rows_read:,} rows in {r.seconds:.2f} s ({r.rows_per_second:,.0f} rows/s)")
    if r.rejected:
        out.print(f"[yellow]{r.rejected:,} rejected rows kept in {r.rejects_file}[/]")


def _stats_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    table.add_column("dataset")
    for _, header in _STAT_COLUMNS:
        table.add_column(header, justify="right")
    table.add_column("published", justify="center")
    for s in rows:
        exp = s.get("expected", {})
        cells = []
        for key, _ in _STAT_COLUMNS:
            v = s.get(key, 0)
            text = f"{v:,}" if v else "·"
            if key in exp:
                text = f"[green]{text}[/]" if v == exp[key] else f"[red]{text} (≠ {exp[key]:,})[/]"
            cells.append(text)
        m = s.get("matches_published")
        cells.append("[green]✓ match[/]" if m else "[red]✗ differs[/]" if m is False else "–")
        table.add_row(s["dataset"], *cells)
    return table


def _print_mining(r: dict[str, Any]) -> None:
    enc = r["encoder"]
    out.print(f"[bold]{r['dataset']}[/]: mined in {r['seconds']:.1f} s with {enc.get('model')} "
              f"({enc.get('backend')}" + (f", agreement {enc['agreement']:.4f}" if enc.get("agreement") else "") + ")")
    ray = enc.get("ray")
    if ray and ray["texts"]:
        out.print(f"encoded on Ray ({ray['address']}): {ray['texts']:,} texts in {ray['seconds']:.1f} s with "
                  f"{ray['workers']} workers, {ray['texts_per_s']:,.0f} texts/s (actor start-up included)")
    elif ray:
        out.print(f"Ray ({ray['address']}): nothing to encode, every text was in the embedding cache")
    table = Table("count", "value", title="knowledge")
    for k, v in r["counts"].items():
        table.add_row(k, f"{v:,}")
    out.print(table)
    steps = Table("step", "seconds", title="timing")
    for k, v in r["steps"].items():
        steps.add_row(k, f"{v:.2f}")
    out.print(steps)
    for card in r["examples"][:2]:
        pos = ", ".join(f"{a['aspect']} ({a['count']})" for a in card["positive_aspects"]) or "–"
        neg = ", ".join(f"{a['aspect']} ({a['count']})" for a in card["negative_aspects"]) or "–"
        rating = card["rating"]
        out.print(f"[bold]card[/] {card['item_id']} {card['title'] or ''}\n"
                  f"  category: {' > '.join(card['category_path']) or '–'} | price band: {card['price_band'] or '–'} | "
                  f"rating: {rating['mean'] if rating else '–'} ({rating['count'] if rating else 0})\n"
                  f"  keywords: {', '.join(card['keywords']) or '–'}\n  liked: {pos}\n  disliked: {neg}")
    for nb in r["neighbours"]:
        out.print(f"[bold]nearest to[/] {nb['item_id']} {str(nb['title'])[:70]}")
        for x in nb["neighbours"][:3]:
            out.print(f"  {x['similarity']:.3f}  {x['item_id']} {str(x['title'])[:70]}")
