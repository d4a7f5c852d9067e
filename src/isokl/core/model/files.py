"""Files: the one way isokl writes a file or a folder, so that a run killed at any moment leaves the previous version
or the new one under the final name, never half of one (no torch).

Every write goes to a temporary name beside its target, `.NAME.part-PID-RANDOM` (one scheme, unique to its writer:
two workers retrying the same cell never share a temporary), and is renamed onto the target when complete.
`is_temporary` recognises those names, so a resumed sweep can clear what a killed writer left.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

PART = ".part-"


def temporary(final: Path) -> Path:
    """The temporary name of a write to `final`: hidden, beside it, unique to this writer."""
    final = Path(final)
    return final.with_name(f".{final.name}{PART}{os.getpid()}-{uuid.uuid4().hex[:8]}")


def is_temporary(p: Path) -> bool:
    """A temporary left by a writer (this scheme, or the `NAME.tmp` / `.NAME.tmp-PID-RANDOM` that writers used before
    it)."""
    n = Path(p).name
    return n.endswith(".tmp") or (n.startswith(".") and (PART in n or ".tmp-" in n))


@contextmanager
def writing(final: Path) -> Iterator[Path]:
    """Yield a temporary path to write `final` through (by any writer: safetensors, GGUF, torch.save); renamed onto
    `final` when the block ends without an exception, removed when it raises."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary(final)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(final: Path, data: bytes) -> Path:
    with writing(final) as tmp:
        tmp.write_bytes(data)
    return Path(final)


def write_all(folder: Path, blobs: Mapping[str, bytes]) -> list[Path]:
    """Several files of one folder: every one written to its temporary first, then all renamed, so an error while
    writing (a full disk) changes none of them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmps = []
    try:
        for name, data in blobs.items():
            tmp = temporary(folder / name)
            tmp.write_bytes(data)
            tmps.append((tmp, folder / name))
        for tmp, final in tmps:
            os.replace(tmp, final)
    finally:
        for tmp, _ in tmps:
            tmp.unlink(missing_ok=True)
    return [final for _, final in tmps]


@contextmanager
def folder(final: Path, keep_other: bool = False) -> Iterator[Path]:
    """Yield a temporary folder to fill; when the block ends it replaces `final` whole (removed when it raises).
    keep_other: if another writer put `final` in place meanwhile, keep theirs (two workers finishing one cell)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary(final)
    tmp.mkdir()
    try:
        yield tmp
        shutil.rmtree(final, ignore_errors=True)
        try:
            tmp.rename(final)
        except OSError:
            if not (keep_other and final.is_dir()):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
