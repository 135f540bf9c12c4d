"""Dataset registry: name -> format, files (sha256 + public origin), and the statistics the authors publish.

`resolve` looks in SHOPMIND_DATA_DIR first, then in the user cache, and downloads from the origin
(checking sha256) when the files are missing and downloads are allowed.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

_GH = "https://github.com/{repo}/raw/{commit}/{path}"
_MCAULEY = "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_v2/"
_ML100K_ZIP = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"


class DatasetError(RuntimeError):
    """A dataset cannot be found, downloaded or verified."""


@dataclass(frozen=True)
class FileSpec:
    name: str
    sha256: str
    url: str | None = None
    member: str | None = None  # path inside a zip archive at `url`
    required: bool = True


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    format: str
    description: str
    files: tuple[FileSpec, ...]
    expected: dict[str, int] = field(default_factory=dict)  # stats as published (see DATASETS.md)
    origin: str = ""
    note: str = ""
    # Published full-ranking results on exactly these files: model -> metric -> value, and the protocol.
    published: dict[str, dict[str, float]] = field(default_factory=dict)
    published_protocol: str = ""


def _gh(repo: str, commit: str, path: str) -> str:
    return _GH.format(repo=repo, commit=commit, path=path)


_SCI = "ysh-1998/CoWPiRec", "db47560", "dataset/Scientific/"
_S3 = "RUCAIBox/CIKM2020-S3Rec", "2a81540", "data/"

REGISTRY: dict[str, DatasetSpec] = {s.name: s for s in [
    DatasetSpec(
        "amazon-scientific", "unisrec",
        "Amazon 2018 Industrial & Scientific as processed for UniSRec (leave-one-out split given)",
        tuple(FileSpec(f"Scientific.{ext}", sha, _gh(_SCI[0], _SCI[1], f"{_SCI[2]}Scientific.{ext}")) for ext, sha in [
            ("text", "95887e6bda76e54f59b71b566320520d5da74e21d3b6ff8f20bfb6e8e84aa831"),
            ("train.inter", "7284f6489d956fa20c9b64ffc84569264320edba5c3bc2fcb22db2ea083a1163"),
            ("valid.inter", "5f37c84d3b54617cdc46638c89dfe8741c7efc4987acd5eb64de2cbd4311f46c"),
            ("test.inter", "546da7e5f44002b4518d7fd58066684bc09613f76c240914e16976d57cfe7083"),
            ("item2index", "896ab1017508cf20834d3d0537da9f8f624324223a835af272a98ba16f8c087a"),
            ("user2index", "f0162b1a3a0c6b7e816f86208e7b36f65d6787923126f9558fbc6d368e4c4974"),
        ]),
        expected={"users": 8442, "items": 4385, "interacted_items": 4385, "events": 59427},
        origin="ysh-1998/CoWPiRec @ db47560 : dataset/Scientific/ (UniSRec data, MIT)",
        published={"VQ-Rec": {"recall@10": 0.1211, "ndcg@10": 0.0643, "recall@50": 0.2369, "ndcg@50": 0.0897},
                   "MISSRec": {"recall@10": 0.1360, "ndcg@10": 0.0753, "recall@50": 0.2431, "ndcg@50": 0.0983}},
        published_protocol="unisrec"),
    DatasetSpec(
        "s3rec-beauty", "s3rec", "Amazon 2014 Beauty 5-core as processed for S3-Rec (sequences in time order)",
        (FileSpec("Beauty.txt", "226cce9c3105299ca0db9615d7d3fb32b3175e90da43100ae352599f0f0107b8",
                  _gh(_S3[0], _S3[1], _S3[2] + "Beauty.txt")),
         FileSpec("Beauty_item2attributes.json", "129e40f67486f6877eff0f5318cfa8530ee8ac23d8b0d1de04e1bb7a2ba0b2d4",
                  _gh(_S3[0], _S3[1], _S3[2] + "Beauty_item2attributes.json"))),
        expected={"users": 22363, "items": 12101, "interacted_items": 12101, "events": 198502},
        origin="RUCAIBox/CIKM2020-S3Rec @ 2a81540 : data/",
        # HR@K equals Recall@K with one held-out item per user.
        published={"PopRec": {"recall@10": 0.0152, "ndcg@10": 0.0068, "recall@20": 0.0217, "ndcg@20": 0.0084},
                   "SASRec": {"recall@10": 0.0605, "ndcg@10": 0.0318, "recall@20": 0.0902, "ndcg@20": 0.0394},
                   "S3-Rec": {"recall@10": 0.0647, "ndcg@10": 0.0327, "recall@20": 0.0994, "ndcg@20": 0.0414}},
        published_protocol="s3rec"),
    DatasetSpec(
        "homedepot", "homedepot", "Home Depot product search relevance: real queries with graded judgments",
        (FileSpec("products.csv", "cfa5bc2a55f1df218608bc89b724df7a11d83447d8c35067dc5a36e8235758df"),
         FileSpec("train.dev.csv", "51f3d1691c8532085ed3c0d1edb76da395f0a09988a747a68c0745d0f850cb0f")),
        expected={"items": 54667, "judgments": 51671, "queries": 8241},
        origin="MohammedFCIS/Home-Depot-Product-Search-Relevance @ 39d6ca2 : data/train.csv.zip",
        note="train.dev.csv is a fixed subset of the Kaggle training file (8,241 of 11,795 queries) and "
             "products.csv is derived from it; neither is published as a file of its own, so this dataset "
             "cannot be downloaded: copy the folder into SHOPMIND_DATA_DIR."),
    DatasetSpec(
        "amazon2018-magazine", "amazon", "Amazon 2018 Magazine_Subscriptions 5-core reviews + metadata",
        (FileSpec("Magazine_Subscriptions_5.json.gz", "95c124603d62d6acdfd1bd62284934fb6c513db836ea64c2e8176c14256426f2",
                  _MCAULEY + "categoryFilesSmall/Magazine_Subscriptions_5.json.gz"),
         FileSpec("meta_Magazine_Subscriptions.json.gz",
                  "147cb78dac0f9ce04849b196e2e13cad6a504bff45d53500b7a1fe8121d91595",
                  _gh("ncloud50/hello2", "b327d27", "meta_Magazine_Subscriptions.json.gz"))),
        expected={"events": 2375}, origin="ncloud50/hello2 @ b327d27 ; McAuley lab Amazon review data 2018"),
    DatasetSpec(
        "amazon2018-giftcards", "amazon", "Amazon 2018 Gift_Cards 5-core reviews + metadata",
        (FileSpec("Gift_Cards_5.json.gz", "41e1f0e50d3c1c9d7d949fb6315944c8bde51ea6b7429a29fdd0d02cbc07ef25",
                  _MCAULEY + "categoryFilesSmall/Gift_Cards_5.json.gz"),
         FileSpec("meta_Gift_Cards.json.gz", "07fd154b7275ab9b1537e3802913508c7a5f84ed00f73201cd3fa18b2b51b342",
                  _gh("ncloud50/giftcard", "f9e7a74", "meta_Gift_Cards.json.gz"))),
        expected={"events": 2972}, origin="ncloud50/giftcard @ f9e7a74 ; McAuley lab Amazon review data 2018"),
    DatasetSpec(
        "amazon2018-allbeauty", "amazon", "Amazon 2018 All_Beauty 5-core reviews (no metadata)",
        (FileSpec("All_Beauty_5.json.gz", "8e49737fefaec9290187c69bf92889452df8be0ab5e36c9476520d6639683279",
                  _gh("sowrabharavishankar/Sentiment-Analysis-on-Amazon-Product-Reviews-", "e0445cb",
                      "All_Beauty_5.json.gz")),),
        expected={"events": 5269, "repeat_user_item_events": 1177},
        origin="sowrabharavishankar/Sentiment-Analysis-on-Amazon-Product-Reviews- @ e0445cb"),
    DatasetSpec(
        "ml-100k", "movielens", "MovieLens 100K ratings (GroupLens)",
        tuple(FileSpec(n, sha, _ML100K_ZIP, f"ml-100k/{n}", required=n in ("u.data", "u.item", "u.user")) for n, sha in [
            ("u.data", "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490"),
            ("u.item", "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701"),
            ("u.user", "f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c"),
            ("u.genre", "9757e0d3e6b298159a80dd48eaf938114690e911e39af97a76949ef1663610bb"),
            ("ua.base", "67b5bcdb380c29f85d56a012ecd88612ae020f30a6730d117a334ee8203b91f2"),
            ("ua.test", "d0497e202417720f57a184ec8c66be2d1afa4ff41bb53787c57b28d6bf79bc42"),
        ]),
        expected={"events": 100000, "users": 943, "items": 1682, "interacted_items": 1682},
        origin="GroupLens ml-100k.zip (same files as eclark0013/relatively @ 17ad526)"),
]}


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def get_spec(name: str) -> DatasetSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise DatasetError(f"unknown dataset {name!r}; registered: {', '.join(REGISTRY)} "
                           "(or pass a path with --format)") from None


def _complete(folder: Path, spec: DatasetSpec) -> bool:
    return all((folder / f.name).is_file() for f in spec.files if f.required)


def local_path(spec: DatasetSpec, data_dir: Path | None, cache_dir: Path) -> Path | None:
    """Where the dataset already is (data dir first, then cache), or None."""
    for root in (data_dir, cache_dir):
        if root is not None and _complete(root / spec.name, spec):
            return root / spec.name
    return None


def verify(folder: Path, spec: DatasetSpec) -> dict[str, str]:
    """sha256 check of every present file: name -> 'ok' | 'missing' | 'mismatch'."""
    out = {}
    for f in spec.files:
        p = folder / f.name
        out[f.name] = "missing" if not p.is_file() else "ok" if sha256_of(p) == f.sha256 else "mismatch"
    return out


Downloader = Callable[[str], bytes]


def _http_get(url: str) -> bytes:
    req = urllib.request.Request(url, headers={"User-Agent": "shopmind"})
    with urllib.request.urlopen(req, timeout=60) as r:  # noqa: S310 (https origins from the registry)
        return r.read()


def fetch(spec: DatasetSpec, cache_dir: Path, get: Downloader = _http_get,
          on_file: Callable[[str], None] | None = None) -> Path:
    """Download the dataset into cache_dir/name, verifying each file's sha256; returns the folder."""
    if spec.note and any(f.url is None for f in spec.files if f.required):
        raise DatasetError(f"{spec.name}: {spec.note}")
    target = cache_dir / spec.name
    target.mkdir(parents=True, exist_ok=True)
    archives: dict[str, bytes] = {}
    for f in spec.files:
        dest = target / f.name
        if dest.is_file() and sha256_of(dest) == f.sha256:
            continue
        if f.url is None:
            continue
        if on_file:
            on_file(f.name)
        try:
            if f.member:
                if f.url not in archives:
                    archives[f.url] = get(f.url)
                with zipfile.ZipFile(io.BytesIO(archives[f.url])) as z:
                    data = z.read(f.member)
            else:
                data = get(f.url)
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            raise DatasetError(f"{spec.name}: cannot download {f.name} from {f.url}: {e}. Offline? Put the files "
                               f"in $SHOPMIND_DATA_DIR/{spec.name}/ or {target}/") from None
        except (KeyError, zipfile.BadZipFile) as e:
            raise DatasetError(f"{spec.name}: {f.url} is not the expected archive ({e})") from None
        digest = hashlib.sha256(data).hexdigest()
        if digest != f.sha256:
            raise DatasetError(f"{spec.name}: checksum mismatch for {f.name} from {f.url}: "
                               f"expected sha256 {f.sha256}, got {digest}; file not saved")
        fd, tmp = tempfile.mkstemp(dir=target, prefix=f".{f.name}.")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        shutil.move(tmp, dest)
    if not _complete(target, spec):
        raise DatasetError(f"{spec.name}: download incomplete in {target}")
    return target


def resolve(name: str, data_dir: Path | None, cache_dir: Path, allow_download: bool = True,
            get: Downloader = _http_get, on_file: Callable[[str], None] | None = None) -> tuple[DatasetSpec, Path]:
    """The registered dataset's folder: SHOPMIND_DATA_DIR, else the cache, else a verified download."""
    spec = get_spec(name)
    found = local_path(spec, data_dir, cache_dir)
    if found is not None:
        return spec, found
    if not allow_download:
        where = f"{data_dir}/{name}" if data_dir else f"{cache_dir}/{name}"
        raise DatasetError(f"{name}: not found in {where} and downloads are off (data.allow_download)")
    return spec, fetch(spec, cache_dir, get, on_file)
