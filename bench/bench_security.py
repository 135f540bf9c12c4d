"""Security benchmark: replay the nine findings of issue 13 as an outsider would, against a real
`shopmind serve --workers 2` (default settings) and the real CLI, for this checkout and, with --before REF,
for an older commit in a temporary git worktree, on the same trained artifact. Each finding is one probe
that prints what it saw; `vulnerable` means the attack worked.

    .venv/bin/python bench/bench_security.py --before 6683b81

Writes bench/results/security.{json,md}. Needs SHOPMIND_DATA_DIR (amazon2018-giftcards is trained once,
~1-2 min). Traffic goes to 127.0.0.1 only; every loop is bounded.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Any, Callable

import duckdb
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, machine, require_data_dir, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATASET = "amazon2018-giftcards"


class Code:
    """One version of shopmind: its src folder, run as `python -m shopmind.cli` with PYTHONPATH=src."""

    def __init__(self, label: str, src: Path, work: Path) -> None:
        self.label, self.src, self.work = label, src, work
        self.store = work / "s.duckdb"
        self.state = work / "state"
        self.artifact = Path(str(self.store) + ".artifacts") / DATASET
        self.revocable = ""

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(self.src), "SHOPMIND_CONFIG": "", "OMP_WAIT_POLICY": "PASSIVE",
                "HF_HUB_OFFLINE": "1", "SHOPMIND_SERVING_STATE_DIR": str(self.state), **extra}

    def cli(self, *args: str, store: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "shopmind.cli", "--store", str(store or self.store), *args],
                              env=self.env(), capture_output=True, text=True, timeout=timeout)

    def key(self, name: str, scope: str) -> str:
        r = self.cli("keys", "create", name, "--scope", scope)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip().splitlines()[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, code: Code, workers: int = 2) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "shopmind.cli", "--store", str(code.store), "serve",
                                      str(code.artifact), "--port", str(self.port), "--workers", str(workers)],
                                     env=code.env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 180
        while time.time() < deadline:
            if self.proc.poll() is not None:
                self.error = self.proc.stderr.read().decode(errors="replace")
                return
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    self.error = None
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
        self.stop()
        self.error = "did not start in 180 s"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _busiest_user(store: Path) -> tuple[str, str]:
    con = duckdb.connect(str(store), read_only=True)
    try:
        return tuple(con.execute("SELECT user_id, any_value(item_id) FROM events WHERE dataset = ? GROUP BY 1 "
                                 "ORDER BY count(*) DESC, 1 LIMIT 1", [DATASET]).fetchall()[0])  # type: ignore
    finally:
        con.close()


def _holds(data: bytes, raw: list[bytes]) -> bool:
    if any(n in data for n in raw):
        return True
    if data[:4] == b"PK\x03\x04":  # npz: look inside every member, compressed or not
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            return any(_holds(z.read(name), raw) for name in z.namelist())
    return False


def _bytes_hold(folder: Path, needle: str) -> list[str]:
    """Files holding the needle in UTF-8, UTF-16 or UTF-32 (numpy's strings), also inside npz members."""
    raw = [needle.encode(enc) for enc in ("utf-8", "utf-16-le", "utf-32-le")]
    files = [folder] if folder.is_file() else [p for p in folder.rglob("*") if p.is_file()]
    return [str(p.relative_to(folder.parent)) for p in files if _holds(p.read_bytes(), raw)]


# -- the probes: each returns (vulnerable, what was seen) --------------------------------------------------

def f1_open_writes(code: Code, srv: Server, admin: str) -> tuple[bool, str]:
    r = httpx.get(srv.url + "/storefront/session", params={"user": "victim-1"})
    if r.status_code != 200:
        return False, f"GET /storefront/session without a key: {r.status_code}"
    token = r.json()["token"]
    ev = {"events": [{"user_id": "victim-1", "item_id": "x", "type": "purchase"}] * 50}
    codes = [httpx.post(srv.url + "/events", json=ev, headers={"X-Session": token}).status_code for _ in range(20)]
    ok = sum(c == 200 for c in codes)
    return ok == 20, f"session minted without a key; 20 posts of 50 purchases for another id: {ok} accepted, " \
                     f"{sum(c == 429 for c in codes)} rate-limited"


def f2_private_reads(code: Code, srv: Server, admin: str) -> tuple[bool, str]:
    user, _ = _busiest_user(code.store)
    r = httpx.get(f"{srv.url}/recommend/{user}")
    leaks = []
    if r.status_code == 200:
        body = r.json()
        if any("explanation" in i for i in body["items"]) or "history_size" in body:
            leaks.append("recommendations with explanations/history without a key")
    u = httpx.get(srv.url + "/storefront/users")
    if u.status_code == 200:
        leaks.append("the shopper list without a key")
    h = httpx.get(srv.url + "/health").json()
    if "pid" in h or any(str(code.work) in str(v) for v in h.values()):
        leaks.append("pid/path on /health")
    return bool(leaks), "; ".join(leaks) or (f"/recommend {r.status_code}, /storefront/users {u.status_code}, "
                                             f"/health keys {sorted(h)}")


def f3_revocation(code: Code, srv: Server, admin: str) -> tuple[bool, str]:
    key = code.revocable  # created before the server started
    ev = {"user_id": "rev", "item_id": "x", "type": "view"}
    before = httpx.post(srv.url + "/events", json=ev, headers={"X-API-Key": key}).status_code
    r = code.cli("keys", "revoke", "soon-revoked")
    assert r.returncode == 0, r.stderr
    time.sleep(1.0)
    after = []
    for _ in range(10):  # fresh connections reach both workers
        with httpx.Client() as c:
            after.append(c.post(srv.url + "/events", json=ev, headers={"X-API-Key": key}).status_code)
    return any(s == 200 for s in after), f"before revoke {before}; 1 s after: {sorted(set(after))}"


def f4_forget(code: Code, srv: Server, admin: str) -> tuple[bool, str]:
    user, item = _busiest_user(code.store)
    h = {"X-API-Key": admin}
    httpx.post(srv.url + "/events", json={"event_id": "f4-evt", "user_id": user, "item_id": item, "type": "view"},
               headers=h).raise_for_status()
    r = httpx.delete(f"{srv.url}/users/{user}", headers=h, timeout=120)
    assert r.status_code == 200, r.text
    repost = httpx.post(srv.url + "/events", json={"event_id": "f4-evt", "user_id": "other", "item_id": item,
                                                   "type": "view"}, headers=h).json()
    con = duckdb.connect(str(code.store), read_only=True)
    rows = con.execute("SELECT count(*) FROM events WHERE user_id = ?", [user]).fetchall()[0][0]
    con.close()
    places = [p for folder in (code.artifact, Path(str(code.store) + ".knowledge"), code.state)
              for p in _bytes_hold(folder, user)]
    seen = (f"store rows {rows}; files holding the id: {places[:4] or 'none'}"
            f"{' …' if len(places) > 4 else ''}; deleted event id re-posted: accepted {repost['accepted']}")
    return bool(rows or places or repost["accepted"]), seen


def _events_csv(n: int, broken: dict[int, str]) -> str:
    lines = ["user_id,item_id,type"] + [broken.get(i, f"u{i},i{i},view") for i in range(2, n + 1)]
    return "\n".join(lines) + "\n"


def f5_csv_quote(code: Code, srv: Server, admin: str) -> tuple[bool, str]:
    f = code.work / "quote.csv"
    f.write_text(_events_csv(600, {501: 'u501,"i501,view'}))
    r = code.cli("ingest", str(f), "--kind", "events", "--name", "f5", "--json", store=code.work / "f5.duckdb")
    run = json.loads(r.stdout)["runs"][0]
    rejected = sum(c["rejected"] for c in run["counts"].values())
    return run["rows_read"] < 599, f"600-line CSV, unclosed quote on line 501: rows_read {run['rows_read']}, " \
                                   f"{rejected} rejected"


def f6_empty_columns_utf16(code: Code, srv: Server, admin: str) -> tuple[bool, str]:
    seen, bad = [], False
    empty = code.work / "empty.csv"
    empty.write_bytes(b"")
    r = code.cli("ingest", str(empty), "--kind", "events", "--name", "f6a", store=code.work / "f6a.duckdb")
    seen.append(f"0-byte file: exit {r.returncode}")
    bad |= r.returncode == 0
    nocol = code.work / "nocol.csv"
    nocol.write_text("user_id,type\n" + "".join(f"u{i},view\n" for i in range(50)))
    r = code.cli("ingest", str(nocol), "--kind", "events", "--name", "f6b", store=code.work / "f6b.duckdb")
    seen.append(f"no item_id column: exit {r.returncode}")
    bad |= r.returncode == 0
    utf16 = code.work / "utf16.csv"
    utf16.write_text(_events_csv(20, {}), encoding="utf-16")
    r = code.cli("ingest", str(utf16), "--kind", "events", "--name", "f6c", store=code.work / "f6c.duckdb")
    said = (r.stdout + r.stderr).lower()
    seen.append(f"UTF-16 file: exit {r.returncode}{', names utf-16' if 'utf-16' in said else ''}")
    bad |= "utf-16" not in said
    return bad, "; ".join(seen)


def f7_corrupt_log(code: Code, srv: Server, admin: str) -> tuple[bool, str]:
    srv.stop()  # the log must be still while we write into it
    log = code.state / DATASET / "events.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    mid = len(lines) // 2
    log.write_bytes(b"".join(lines[:mid]) + b'{"user_id": "a\x01b", "type": "view"}\n' + b"".join(lines[mid:]))
    again = Server(code)
    try:
        if again.error:
            return True, f"server does not start: {again.error.strip().splitlines()[-1][:160]}"
        q = log.with_name("events.jsonl.quarantine")
        return False, f"server starts; quarantine file {'holds the line' if q.is_file() else 'missing'}"
    finally:
        again.stop()


def f8_forget_race(code: Code, srv: Server, admin: str) -> tuple[bool, str]:
    h = {"X-API-Key": admin}
    doomed = [f"race-doomed-{i}" for i in range(8)]
    for u in doomed:
        httpx.post(srv.url + "/events", json={"events": [{"user_id": u, "item_id": "x", "type": "view"}] * 3},
                   headers=h).raise_for_status()
    stop_at = time.time() + 5
    accepted = [0]

    def post(w: int) -> None:
        i = 0
        while time.time() < stop_at:
            with httpx.Client(base_url=srv.url, timeout=10) as c:
                r = c.post("/events", json={"events": [{"event_id": f"r{w}-{i}-{j}", "user_id": "race-keeper",
                                                        "item_id": "x", "type": "view"} for j in range(4)]}, headers=h)
                accepted[0] += r.json().get("accepted", 0) if r.status_code == 200 else 0
            i += 1

    threads = [threading.Thread(target=post, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for u in doomed:
        httpx.delete(f"{srv.url}/users/{u}", headers=h, timeout=60)
        time.sleep(0.4)
    for t in threads:
        t.join()
    time.sleep(1.0)
    seen: dict[Any, int] = {}
    for _ in range(40):
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            r = c.get("/recommend/race-keeper", headers=h)
            pid = c.get("/admin/status", headers=h)
            who = pid.json()["pid"] if pid.status_code == 200 else c.get("/health").json().get("pid")
            seen[who] = r.json()["events_seen"]
        if len(seen) == 2:
            break
    return any(v != accepted[0] for v in seen.values()), f"accepted {accepted[0]}; each worker saw {sorted(seen.values())}"


def f9_contract(code: Code, srv: Server, admin: str) -> tuple[bool, str]:
    doc = httpx.get(srv.url + "/openapi.json").json()
    k = next(p for p in doc["paths"]["/recommend/{user_id}"]["get"]["parameters"] if p["name"] == "k")["schema"]
    documented = set(doc["paths"]["/events"]["post"]["responses"])
    issues = []
    if "maximum" not in k:
        issues.append("k has no maximum")
    if not {"401", "429", "413"} <= documented:
        issues.append(f"/events documents only {sorted(documented)}")
    head = (f"POST /events HTTP/1.1\r\nHost: x\r\nX-API-Key: {admin}\r\nContent-Type: application/json\r\n"
            "Content-Length: 500\r\n\r\n").encode()
    t0 = time.time()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=15) as s:
        s.sendall(head + b'{"user_id": "u"')
        try:
            reply = s.recv(200)
        except socket.timeout:
            reply = b""
    if not reply:
        issues.append("a short body held the connection 15 s without a reply")
    seen = "; ".join(issues) or f"limits and errors documented; short body answered in {time.time() - t0:.1f} s " \
                                f"({reply[:12].decode(errors='replace')})"
    return bool(issues), seen


PROBES: list[tuple[str, str, Callable[..., tuple[bool, str]]]] = [
    ("1", "anyone can write events", f1_open_writes), ("2", "anyone can read shoppers' histories", f2_private_reads),
    ("3", "revocation needs a restart", f3_revocation), ("4", "forgetting leaves copies", f4_forget),
    ("5", "a broken quote swallows the file", f5_csv_quote),
    ("6", "empty input, missing column, UTF-16", f6_empty_columns_utf16),
    ("8", "forget vs concurrent writes (2 workers)", f8_forget_race),
    ("9", "contract and short bodies", f9_contract), ("7", "a corrupt log line stops the server", f7_corrupt_log),
]


def run(code: Code, template: Path) -> list[dict[str, Any]]:
    shutil.copytree(template, code.work, dirs_exist_ok=True)
    admin = code.key("admin", "admin")
    code.revocable = code.key("soon-revoked", "write")
    out = []
    srv = Server(code)
    assert not srv.error, srv.error
    try:
        for number, title, probe in PROBES:
            t0 = time.time()
            try:
                vulnerable, seen = probe(code, srv, admin)
            except Exception as e:  # a probe that breaks says so; it never hides as "fixed"
                vulnerable, seen = True, f"probe failed: {type(e).__name__}: {str(e)[:200]}"
            out.append({"finding": number, "title": title, "vulnerable": vulnerable, "seen": seen,
                        "seconds": round(time.time() - t0, 1)})
            print(f"  [{code.label}] {number}. {title}: {'VULNERABLE' if vulnerable else 'ok'} — {seen}",
                  file=sys.stderr)
    finally:
        srv.stop()
    return sorted(out, key=lambda r: r["finding"])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", help="a git ref to attack too (checked out in a temporary worktree)")
    args = ap.parse_args(argv)
    data = require_data_dir()
    command = command_line("bench_security.py", argv)
    with tempfile.TemporaryDirectory(prefix="shopmind-security-") as tmp:
        tmp = Path(tmp)
        template = tmp / "template"
        template.mkdir()
        now = Code("now", ROOT / "src", template)
        print("  security: training amazon2018-giftcards for the probes", file=sys.stderr)
        for step in (["--data-dir", str(data), "ingest", DATASET], ["train", "-d", DATASET, "--json"]):
            r = now.cli(*step, timeout=1200)
            assert r.returncode == 0, r.stderr[-2000:]
        versions = [("now", ROOT / "src")]
        if args.before:
            tree = tmp / "before-tree"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), args.before],
                           check=True, capture_output=True)
            versions.insert(0, (f"before ({args.before})", tree / "src"))
        results = {}
        try:
            for label, src in versions:
                results[label] = run(Code(label, src, tmp / label.split()[0]), template)
        finally:
            if args.before:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tmp / "before-tree")],
                               capture_output=True)
    labels = list(results)
    md = ["# Security probes (issue 13's findings)", "", f"`{command}`", "",
          "| finding | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for i, row in enumerate(results[labels[-1]]):
        cells = [f"{'**vulnerable**' if results[lab][i]['vulnerable'] else 'fixed'}: {results[lab][i]['seen']}"
                 for lab in labels]
        md.append(f"| {row['finding']}. {row['title']} | " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    md += ["", "Each probe runs against `shopmind serve --workers 2` with default settings over an "
               "amazon2018-giftcards artifact trained in the same run, or the CLI; 'vulnerable' means the attack "
               "worked."]
    write_results("security", {"command": command, "machine": machine(), "results": results}, "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
