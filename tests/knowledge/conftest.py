"""Knowledge fixtures: the Scientific item texts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(scope="session")
def scientific_texts(data_dir: Path) -> list[str]:
    lines = (data_dir / "amazon-scientific" / "Scientific.text").read_text(encoding="utf-8").split("\n")[1:]
    return [line.split("\t", 1)[1].strip() for line in lines if "\t" in line]
