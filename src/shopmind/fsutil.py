"""File-system helpers every layer shares: fsync of a folder, and a secret key file created once."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def fsync_dir(folder: str | Path) -> None:
    """Make a rename or a new file in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def secret_key(path: str | Path, folder_mode: int = 0o755) -> bytes:
    """The 32 random bytes kept in `path` (hex, mode 0600), created on first use. Processes creating it at
    the same moment agree on one key: each writes its own temporary file and links it into place, and the
    link fails for all but the first."""
    path = Path(path)
    if not path.is_file():
        path.parent.mkdir(mode=folder_mode, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # atomic create-if-absent
            fsync_dir(path.parent)
        except FileExistsError:
            pass
        tmp.unlink()
    return bytes.fromhex(path.read_text().strip())
