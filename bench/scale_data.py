"""A synthetic shop of N items and M events, fitted on the real datasets, for the cost-growth benchmark.

    SHOPMIND_DATA_DIR=../shared/data .venv/bin/python bench/scale_data.py OUT --items 100000 --events 2000000

writes OUT/items.parquet, OUT/events/part-*.parquet (about `--part-events` events each, whole users per
part, so a prefix of the parts is a sample of users with their complete histories), the two ingest
mappings (OUT/items.mapping.toml, OUT/events.mapping.toml: the generic adapter reads the files with
them) and OUT/summary.json (every fitted number, and what the output measured). Deterministic for a
seed: the same arguments give byte-identical Parquet files.

How each part is made ("say how"):

* **Catalog.** A pool of real products: Amazon "Industrial & Scientific" (title, brand, category text
  under "Industrial & Scientific"), Amazon 2018 gift cards and magazines metadata (title with HTML
  removed, brand, category path), the Kaggle fashion styles (display name; path masterCategory >
  subCategory > articleType; brand = first word of the name) and all 54,667 Home Depot titles (no
  categories or brands published: the path is "Home Improvement" > the head noun of the title, i.e. the
  last word of its product phrase, before " with"/" for"/" in Colour"/" - "/"(" (`head_noun`); the brand
  is its first word). A synthetic item takes one pool record
  r (uniformly), keeps r's category path and brand, and gets the title "first half of r's words + second
  half of the words of another record r2 of the same leaf" (r2 from the same source when the leaf has
  fewer than 3 records). Vocabulary, brands and category paths are therefore all real; ids are
  `i0000000`.. (distinct). Prices: log-normal with (mu, sigma) fitted on the only real prices in the
  data (362 Amazon gift-card prices).
* **Popularity.** Item i gets weight rank_i^-s over a random permutation of the items; s is the mean of
  the Zipf exponents fitted (`zipf_exponent`: least squares of log count on log rank at 40 log-spaced
  ranks from 1 to the last rank with at least 5 events) on the item counts of the two real e-commerce
  sequence datasets (amazon-scientific, s3rec-beauty). The other datasets' exponents are reported.
* **User activity.** Events per user ~ round(LogNormal(mu, sigma)) clipped to [2, 1000], (mu, sigma) of
  log sequence length fitted on s3rec-beauty's 22,363 users (a 5-core set: real shops have more
  one-event users). Users are drawn until the event total is exactly M (the last one is cut).
* **Sequences.** First item: by popularity. Each next item: with probability p_same from the previous
  item's leaf category (popularity-weighted within the leaf), else by global popularity. p_same is the
  excess same-leaf share of consecutive pairs in amazon-scientific's sequences over what popularity
  alone gives: (R - C) / (1 - C), R the observed share of consecutive pairs in the same leaf, C the
  chance of that under independent popularity draws (sum of squared leaf shares). With a
  popularity-weighted within-leaf draw the chain keeps the popularity law as its marginal.
* **Time.** Each user starts uniformly within the 5-95 % span of the real Amazon 2018 review times;
  gaps between a user's events: with probability p_session (the share of same-day consecutive reviews
  by one reviewer) uniform in 1 min..1 h, else LogNormal fitted on the positive gaps (seconds). A user
  whose timeline would pass the end of the real span has their gaps scaled down to end within it.
  Strictly increasing per user (+1 s per position after rounding), and `seq` (position) is written too.
* **Events.** Type `rating` (as the real review data), value drawn from the real star distribution of
  the Amazon 2018 reviews.

Throughput: numpy per chunk of users (the sequence chain is one vectorised step per position), Parquet
written part by part, so memory stays bounded by the catalog arrays plus one part.
"""

from __future__ import annotations

import argparse
import gzip
import html
import json
import os
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ITEMS_MAPPING_TOML = 'kind = "items"\n'
EVENTS_MAPPING_TOML = 'kind = "events"\n[constants]\ntype = "rating"\n'
MIN_LEN, MAX_LEN = 2, 1000
_WORD = re.compile(r"[A-Za-z]{3,}")
_TAG = re.compile(r"<[^>]*(?:>|$)")
# Where a Home Depot title's product phrase ends: " with ", " for ", " in Colour", " - ", " (", ",".
_QUALIFIER = re.compile(r" (?:with|for|in [A-Z][a-z]) | - | \(|,|-DISCONTINUED")


def head_noun(title: str) -> str | None:
    """The last word (3+ letters) of the title's product phrase: 'Leviton 3 ft. Cat 5e Patch Cord - Yellow' ->
    'Cord'. Home Depot publishes no categories; this word stands for the leaf category."""
    words = _WORD.findall(_QUALIFIER.split(title, 1)[0]) or _WORD.findall(title)
    return words[-1].capitalize() if words else None


def _data_dir(data_dir: str | Path | None) -> Path:
    value = data_dir or os.environ.get("SHOPMIND_DATA_DIR")
    if not value:
        raise SystemExit("SHOPMIND_DATA_DIR is not set: point it at the real datasets (e.g. ../shared/data)")
    return Path(value)


# --- the real data ------------------------------------------------------------------------------------
@dataclass
class Pool:
    """Real product records: title halves, brand, category path (as a leaf id and a path), source."""

    head: np.ndarray  # first half of the title's words
    tail: np.ndarray  # second half
    brand: np.ndarray
    paths: list[tuple[str, ...]]
    leaf: np.ndarray  # leaf id per record (index into `paths_by_leaf`)
    source: np.ndarray  # source id per record
    sources: list[str]

    def __len__(self) -> int:
        return len(self.head)


def _clean(text: Any) -> str:
    if not isinstance(text, str):
        return ""
    text = html.unescape(_TAG.sub(" ", text))
    text = " ".join(text.split())
    return text if any(c.isalpha() for c in text) and "{" not in text else ""


def load_pool(data_dir: str | Path | None = None) -> Pool:
    d = _data_dir(data_dir)
    recs: list[tuple[str, str, tuple[str, ...], str]] = []  # title, brand, path, source
    with open(d / "amazon-scientific" / "Scientific.text", encoding="utf-8") as f:
        next(f)
        for line in f:
            _, _, text = line.rstrip("\n").partition("\t")
            parts = [p.strip() for p in text.strip().removesuffix(".").rsplit(". ", 2)]
            if len(parts) == 3 and parts[0]:
                cat = parts[1].removeprefix("Industrial & Scientific").strip()
                recs.append((parts[0], parts[2], ("Industrial & Scientific", cat) if cat else
                             ("Industrial & Scientific",), "amazon-scientific"))
    for name, fname in (("amazon2018-giftcards", "meta_Gift_Cards.json.gz"),
                        ("amazon2018-magazine", "meta_Magazine_Subscriptions.json.gz")):
        with gzip.open(d / name / fname, "rt", encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                title = _clean(r.get("title"))
                # Some published "category" entries are feature sentences ("No expiration, no fees."): dropped.
                path = tuple(dict.fromkeys(c for c in (_clean(x) for x in r.get("category") or [])
                                           if c and len(c) <= 50 and not c.endswith(".") and "$" not in c))
                if title and path:
                    recs.append((title, _clean(r.get("brand")), path, name))
    import csv

    with open(d / "fashion-images" / "styles.csv", encoding="utf-8", newline="") as f:
        for r in csv.DictReader(f):
            title = (r.get("productDisplayName") or "").strip()
            if title:
                path = tuple(x for x in (r["masterCategory"], r["subCategory"], r["articleType"]) if x)
                recs.append((title, title.split()[0], path, "fashion-images"))
    with open(d / "homedepot" / "products.csv", encoding="utf-8", newline="") as f:
        for r in csv.DictReader(f):
            title = (r.get("product_title") or "").strip()
            noun = head_noun(title)
            if title and noun:
                recs.append((title, title.split()[0], ("Home Improvement", noun), "homedepot"))
    heads, tails = [], []
    for title, _, _, _ in recs:
        w = title.split()
        k = max(1, (len(w) + 1) // 2)
        heads.append(" ".join(w[:k]))
        tails.append(" ".join(w[k:]))
    paths = sorted({r[2] for r in recs})
    pindex = {p: i for i, p in enumerate(paths)}
    sources = sorted({r[3] for r in recs})
    sindex = {s: i for i, s in enumerate(sources)}
    return Pool(np.array(heads, dtype=object), np.array(tails, dtype=object),
                np.array([r[1] or "" for r in recs], dtype=object), paths,
                np.array([pindex[r[2]] for r in recs], np.int64), np.array([sindex[r[3]] for r in recs], np.int64),
                sources)


def zipf_exponent(counts: np.ndarray, min_count: int = 5, points: int = 40) -> float:
    """s of count ~ rank^-s: least squares of log count on log rank at `points` log-spaced ranks from 1 to
    the last rank with at least `min_count` events (so each decade of ranks weighs the same and the
    Poisson-noisy tail of rare items does not decide the slope)."""
    c = np.sort(np.asarray(counts, np.float64))[::-1]
    k = int((c >= min_count).sum())
    if k < 3:
        return float("nan")
    ranks = np.unique(np.round(np.geomspace(1, k, points)).astype(np.int64))
    slope = np.polyfit(np.log(ranks), np.log(c[ranks - 1]), 1)[0]
    return float(-slope)


def _scientific_sequences(d: Path) -> tuple[list[list[int]], dict[int, str]]:
    seqs = []
    with open(d / "amazon-scientific" / "Scientific.test.inter", encoding="utf-8") as f:
        next(f)
        for line in f:
            _, hist, target = line.rstrip("\n").split("\t")
            seqs.append([int(x) for x in hist.split()] + [int(target)])
    asin = {}
    with open(d / "amazon-scientific" / "Scientific.item2index", encoding="utf-8") as f:
        for line in f:
            a, i = line.split()
            asin[int(i)] = a
    cats = {}
    with open(d / "amazon-scientific" / "Scientific.text", encoding="utf-8") as f:
        next(f)
        for line in f:
            a, _, text = line.rstrip("\n").partition("\t")
            parts = text.strip().removesuffix(".").rsplit(". ", 2)
            cats[a] = parts[1] if len(parts) == 3 else ""
    return seqs, {i: cats.get(a, "") for i, a in asin.items()}


def _review_rows(d: Path) -> list[tuple[str, str, int, float]]:
    rows = []
    for name, fname in (("amazon2018-allbeauty", "All_Beauty_5.json.gz"), ("amazon2018-giftcards", "Gift_Cards_5.json.gz"),
                        ("amazon2018-magazine", "Magazine_Subscriptions_5.json.gz")):
        with gzip.open(d / name / fname, "rt", encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                rows.append((f"{name}:{r['reviewerID']}", f"{name}:{r['asin']}", int(r["unixReviewTime"]),
                             float(r["overall"])))
    return rows


def fit_real(data_dir: str | Path | None = None) -> dict[str, Any]:
    """Every number the generator uses, fitted on the real files (a few seconds)."""
    d = _data_dir(data_dir)
    zipf: dict[str, float] = {}
    sci, sci_cat = _scientific_sequences(d)
    zipf["amazon-scientific"] = zipf_exponent(np.bincount(np.concatenate([np.array(s) for s in sci])))
    beauty = []
    with open(d / "s3rec-beauty" / "Beauty.txt", encoding="utf-8") as f:
        for line in f:
            beauty.append([int(x) for x in line.split()[1:]])
    zipf["s3rec-beauty"] = zipf_exponent(np.bincount(np.concatenate([np.array(s) for s in beauty])))
    ml = np.loadtxt(d / "ml-100k" / "u.data", dtype=np.int64)
    zipf["ml-100k"] = zipf_exponent(np.bincount(ml[:, 1]))
    reviews = _review_rows(d)
    for name in ("amazon2018-allbeauty", "amazon2018-giftcards", "amazon2018-magazine"):
        zipf[name] = zipf_exponent(np.array(list(Counter(r[1] for r in reviews if r[1].startswith(name)).values())))
    target = float(np.mean([zipf["amazon-scientific"], zipf["s3rec-beauty"]]))

    lengths = np.array([len(s) for s in beauty], np.float64)
    mu_len, sigma_len = float(np.log(lengths).mean()), float(np.log(lengths).std())

    # Same-leaf share of consecutive pairs vs the chance of it under popularity alone (amazon-scientific).
    pairs = [(a, b) for s in sci for a, b in zip(s, s[1:])]
    same = np.mean([sci_cat.get(a) == sci_cat.get(b) and sci_cat.get(a) != "" for a, b in pairs])
    item_counts = Counter(i for s in sci for i in s)
    leaf_mass: Counter[str] = Counter()
    for i, c in item_counts.items():
        leaf_mass[sci_cat.get(i, "")] += c
    total = sum(leaf_mass.values())
    chance = sum((m / total) ** 2 for leaf, m in leaf_mass.items() if leaf)
    p_same = float((same - chance) / (1 - chance))

    by_user: dict[str, list[int]] = {}
    for u, _, t, _ in reviews:
        by_user.setdefault(u, []).append(t)
    gaps = np.concatenate([np.diff(sorted(ts)) for ts in by_user.values() if len(ts) > 1]).astype(np.float64)
    p_session = float((gaps == 0).mean())
    pos = gaps[gaps > 0]
    times = np.array([r[2] for r in reviews], np.float64)
    stars = Counter(int(round(r[3])) for r in reviews)
    n_stars = sum(stars.values())

    prices = []
    with gzip.open(d / "amazon2018-giftcards" / "meta_Gift_Cards.json.gz", "rt", encoding="utf-8") as f:
        for line in f:
            p = json.loads(line).get("price")
            m = re.fullmatch(r"\$([\d,]+(?:\.\d+)?)", p.strip()) if isinstance(p, str) else None
            if m:
                prices.append(float(m.group(1).replace(",", "")))
    lp = np.log(np.array(prices))
    return {
        "zipf_by_dataset": {k: round(v, 4) for k, v in zipf.items()},
        "zipf_target": round(target, 4),
        "zipf_target_from": ["amazon-scientific", "s3rec-beauty"],
        "length_lognormal": {"mu": round(mu_len, 4), "sigma": round(sigma_len, 4), "users": len(beauty),
                             "mean_real": round(float(lengths.mean()), 3), "from": "s3rec-beauty"},
        "same_leaf": {"observed": round(float(same), 4), "chance": round(float(chance), 4), "p_same": round(p_same, 4),
                      "pairs": len(pairs), "from": "amazon-scientific"},
        "gaps": {"p_session": round(p_session, 4), "mu": round(float(np.log(pos).mean()), 4),
                 "sigma": round(float(np.log(pos).std()), 4), "median_days": round(float(np.median(pos)) / 86400, 1),
                 "pairs": int(len(gaps)), "from": "amazon2018 reviews (all beauty, gift cards, magazines)"},
        "time_span": [int(np.quantile(times, 0.05)), int(np.quantile(times, 0.95))],
        "stars": {str(k): round(stars.get(k, 0) / n_stars, 4) for k in range(1, 6)},
        "price_lognormal": {"mu": round(float(lp.mean()), 4), "sigma": round(float(lp.std()), 4), "n": len(prices),
                            "from": "amazon2018-giftcards metadata"},
    }


# --- generation -------------------------------------------------------------------------------------------
def make_catalog(pool: Pool, n_items: int, fit: dict[str, Any], seed: int) -> dict[str, Any]:
    """Arrays of the synthetic catalog (titles, brands, leaf ids, paths, prices, popularity weights)."""
    rng = np.random.default_rng([seed, 1])
    r = rng.integers(0, len(pool), n_items)
    leaf = pool.leaf[r]
    # Members of each leaf (and of each source), to draw the second title half from.
    order = np.argsort(pool.leaf, kind="stable")
    lo = np.searchsorted(pool.leaf[order], np.arange(len(pool.paths)), "left")
    hi = np.searchsorted(pool.leaf[order], np.arange(len(pool.paths)), "right")
    sorder = np.argsort(pool.source, kind="stable")
    slo = np.searchsorted(pool.source[sorder], np.arange(len(pool.sources)), "left")
    shi = np.searchsorted(pool.source[sorder], np.arange(len(pool.sources)), "right")
    u = rng.random(n_items)
    size = hi[leaf] - lo[leaf]
    in_leaf = order[lo[leaf] + np.minimum((u * size).astype(np.int64), size - 1)]
    src = pool.source[r]
    ssize = shi[src] - slo[src]
    in_source = sorder[slo[src] + np.minimum((u * ssize).astype(np.int64), ssize - 1)]
    r2 = np.where(size >= 3, in_leaf, in_source)
    titles = [f"{h} {t}".strip() for h, t in zip(pool.head[r], pool.tail[r2])]
    p = fit["price_lognormal"]
    prices = np.round(np.exp(rng.normal(p["mu"], p["sigma"], n_items)), 2)
    ranks = rng.permutation(n_items) + 1
    weights = ranks.astype(np.float64) ** -fit["zipf_target"]
    return {"titles": titles, "brand": pool.brand[r], "leaf": leaf, "price": prices, "weights": weights,
            "ids": np.array([f"i{i:07d}" for i in range(n_items)], dtype=object)}


class _Sampler:
    """Global and within-leaf popularity draws by inverse CDF (searchsorted), vectorised."""

    def __init__(self, leaf: np.ndarray, weights: np.ndarray) -> None:
        self.order = np.argsort(leaf, kind="stable")
        self.leaf = leaf
        sl = leaf[self.order]
        self.cw = np.cumsum(weights[self.order])
        n_leaf = int(leaf.max()) + 1 if len(leaf) else 0
        lo = np.searchsorted(sl, np.arange(n_leaf), "left")
        hi = np.searchsorted(sl, np.arange(n_leaf), "right")
        self.lo, self.hi = lo, hi
        self.base = np.where(lo > 0, self.cw[np.maximum(lo - 1, 0)], 0.0)
        self.top = np.where(hi > 0, self.cw[np.maximum(hi - 1, 0)], 0.0)

    def global_(self, u: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self.cw, u * self.cw[-1], "right")
        return self.order[np.minimum(pos, len(self.cw) - 1)]

    def within(self, prev: np.ndarray, u: np.ndarray) -> np.ndarray:
        lf = self.leaf[prev]
        x = self.base[lf] + u * (self.top[lf] - self.base[lf])
        pos = np.clip(np.searchsorted(self.cw, x, "right"), self.lo[lf], self.hi[lf] - 1)
        return self.order[pos]


def user_lengths(n_events: int, fit: dict[str, Any], seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 2])
    p = fit["length_lognormal"]
    out, total = [], 0
    while total < n_events:
        block = np.clip(np.round(np.exp(rng.normal(p["mu"], p["sigma"], 1 << 20))), MIN_LEN, MAX_LEN).astype(np.int64)
        out.append(block)
        total += int(block.sum())
    lengths = np.concatenate(out)
    cum = np.cumsum(lengths)
    n_users = int(np.searchsorted(cum, n_events, "left")) + 1
    lengths = lengths[:n_users]
    lengths[-1] -= int(cum[n_users - 1] - n_events)
    return lengths[lengths > 0]


def make_sequences(lengths: np.ndarray, sampler: _Sampler, p_same: float, rng: np.random.Generator) -> np.ndarray:
    """Item rows of users with these lengths, concatenated user by user (one vectorised step per position)."""
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    by_len = np.argsort(-lengths, kind="stable")
    sorted_len = lengths[by_len]
    out = np.empty(int(lengths.sum()), np.int64)
    for t in range(int(lengths.max()) if len(lengths) else 0):
        n = int(np.searchsorted(-sorted_len, -t, "left"))  # users with length > t
        act = by_len[:n]
        u = rng.random(n)
        if t == 0:
            out[offsets[act]] = sampler.global_(u)
            continue
        prev = out[offsets[act] + t - 1]
        same = rng.random(n) < p_same
        nxt = sampler.global_(u)
        if same.any():
            nxt[same] = sampler.within(prev[same], u[same])
        out[offsets[act] + t] = nxt
    return out


def generate(out: str | Path, n_items: int, n_events: int, seed: int = 0, data_dir: str | Path | None = None,
             part_events: int = 200_000, fit: dict[str, Any] | None = None, pool: Pool | None = None,
             progress: bool = True) -> dict[str, Any]:
    """Write the shop to `out`; returns the summary (also written to out/summary.json)."""
    t0 = time.perf_counter()
    out = Path(out)
    (out / "events").mkdir(parents=True, exist_ok=True)
    for old in (out / "events").glob("part-*.parquet"):
        old.unlink()
    fit = fit or fit_real(data_dir)
    pool = pool or load_pool(data_dir)
    cat = make_catalog(pool, n_items, fit, seed)
    path_names = pool.paths
    items = pa.table({
        "item_id": pa.array(cat["ids"], pa.string()), "title": pa.array(cat["titles"], pa.string()),
        "brand": pa.array([b or None for b in cat["brand"]], pa.string()),
        "categories": pa.array([list(path_names[x]) for x in cat["leaf"]], pa.list_(pa.string())),
        "price": pa.array(cat["price"], pa.float64())})
    pq.write_table(items, out / "items.parquet", row_group_size=100_000, compression="zstd")
    del items
    t_items = time.perf_counter() - t0
    if progress:
        print(f"  scale_data: {n_items:,} items in {t_items:.1f} s", file=sys.stderr, flush=True)

    sampler = _Sampler(cat["leaf"], cat["weights"])
    lengths = user_lengths(n_events, fit, seed)
    ids = pa.array(cat["ids"], pa.string())
    g = fit["gaps"]
    t_lo, t_hi = fit["time_span"]
    stars = np.array([fit["stars"][str(k)] for k in range(1, 6)])
    bounds = np.searchsorted(np.cumsum(lengths), np.arange(part_events, n_events, part_events), "right")
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(lengths)]])
    counts = np.zeros(n_items, np.int64)
    same_leaf = pairs = 0
    for part, (a, b) in enumerate(zip(starts, ends)):
        if b <= a:
            continue
        rng = np.random.default_rng([seed, 3, part])
        ln = lengths[a:b]
        seq = make_sequences(ln, sampler, fit["same_leaf"]["p_same"], rng)
        n = len(seq)
        counts += np.bincount(seq, minlength=n_items)
        first = np.zeros(n, bool)
        first[np.concatenate([[0], np.cumsum(ln)[:-1]])] = True
        same_leaf += int((cat["leaf"][seq[1:]] == cat["leaf"][seq[:-1]])[~first[1:]].sum())
        pairs += int((~first[1:]).sum())
        gaps = np.where(rng.random(n) < g["p_session"], rng.uniform(60, 3600, n),
                        np.exp(rng.normal(g["mu"], g["sigma"], n)))
        gaps = np.maximum(np.round(gaps), 1).astype(np.int64)
        gaps[first] = 0
        user_start = rng.integers(t_lo, t_hi, len(ln))
        cum = np.cumsum(gaps)
        within = cum - np.repeat(cum[first], ln)  # seconds since the user's first event
        span = within[np.concatenate([np.flatnonzero(first)[1:], [n]]) - 1]
        # A user whose gaps would run past the end of the real span is compressed into it (heavy users are
        # frequent users); + position keeps the times strictly increasing after rounding.
        factor = np.minimum(1.0, (t_hi - user_start) / np.maximum(span, 1))
        seg = np.repeat(np.arange(len(ln)), ln)
        pos = np.arange(n) - np.repeat(np.flatnonzero(first), ln)
        ts = np.repeat(user_start, ln) + np.floor(within * factor[seg]).astype(np.int64) + pos
        users = pa.array([f"u{u:08d}" for u in range(a, b)], pa.string())
        table = pa.table({
            "user_id": users.take(pa.array(seg)), "item_id": ids.take(pa.array(seq)),
            "timestamp": pa.array(ts, pa.timestamp("s")), "seq": pa.array(pos, pa.int32()),
            "value": pa.array(rng.choice(np.arange(1.0, 6.0), n, p=stars / stars.sum()), pa.float64())})
        pq.write_table(table, out / "events" / f"part-{part:05d}.parquet", compression="zstd")
        if progress and (part % 10 == 9 or b == len(lengths)):
            print(f"  scale_data: {int(np.cumsum(lengths)[b - 1]):,} / {n_events:,} events "
                  f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    (out / "items.mapping.toml").write_text(ITEMS_MAPPING_TOML)
    (out / "events.mapping.toml").write_text(EVENTS_MAPPING_TOML)
    summary = {
        "items": n_items, "events": int(lengths.sum()), "users": int(len(lengths)), "seed": seed,
        "parts": len(list((out / "events").glob("part-*.parquet"))), "fit": fit,
        "output": {"zipf": round(zipf_exponent(counts), 4), "items_with_events": int((counts > 0).sum()),
                   "top1pct_share": round(float(np.sort(counts)[::-1][:max(1, n_items // 100)].sum() / counts.sum()), 4),
                   "same_leaf_share": round(same_leaf / max(pairs, 1), 4),
                   "mean_events_per_user": round(float(lengths.mean()), 3),
                   "leaves": int(len(np.unique(cat["leaf"]))), "distinct_titles": len(set(cat["titles"]))},
        "seconds": round(time.perf_counter() - t0, 2), "seconds_items": round(t_items, 2)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--items", type=int, default=10_000)
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--part-events", type=int, default=200_000)
    p.add_argument("--fit-only", action="store_true", help="print the fitted numbers and exit")
    args = p.parse_args(argv)
    if args.fit_only:
        print(json.dumps(fit_real(), indent=1))
        return 0
    summary = generate(args.out, args.items, args.events, args.seed, part_events=args.part_events)
    print(json.dumps({k: v for k, v in summary.items() if k != "fit"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
