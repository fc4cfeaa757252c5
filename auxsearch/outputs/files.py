"""Files written whole or not at all.

:func:`atomic_write` writes into a hidden temporary file in the same folder
(``.NAME.<pid>.<random>.tmp``), flushes it to disk, then renames it over ``NAME``. A reader, or a
writer killed at any moment, sees the old file or the new one, never half of one; a temporary
file a killed writer leaves is hidden, never read, and removed by a later write once it is an
hour old.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

TEMP_SUFFIX = ".tmp"
STALE_TEMP_SECONDS = 3600.0  # a temporary file this old was left by a killed writer


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Write ``path`` whole or not at all: ``write(tmp)`` fills a temporary file beside it, renamed over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def is_temporary(path: str | Path) -> bool:
    """A file :func:`atomic_write` writes through (never an output)."""
    name = Path(path).name
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def remove_stale_temporaries(folder: Path, older_than: float = STALE_TEMP_SECONDS) -> list[Path]:
    """Delete temporary files a killed writer left in ``folder`` (and ``designs/``) over ``older_than`` s ago."""
    removed = []
    now = time.time()
    for d in (folder, folder / "designs"):
        if not d.is_dir():
            continue
        for p in d.iterdir():
            try:
                if is_temporary(p) and p.is_file() and now - p.stat().st_mtime > older_than:
                    p.unlink()
                    removed.append(p)
            except OSError:  # removed meanwhile by another writer
                pass
    return removed
