"""Where results go: the checks every CLI makes before any work, so that no run overwrites or deletes what the user
did not ask it to create, and a folder of inputs with a bad file still finishes the good ones.

* :func:`check_output` — before anything is loaded: ``output`` must not be the input (or inside an input folder),
  no part of its path may be a file, and the place it goes must be writable.
* :func:`destinations` — input file → output file for the image CLIs; refuses a destination that is an input file
  or that two inputs would share.
* :func:`each_input` — run a function per input file; a :class:`~shared.errors.UserError` for one file is reported
  in one ``warning:`` line and the others go on; :func:`raise_failures` ends with one ``error:`` line (exit 2)
  naming the inputs that failed.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

from shared.errors import UserError, one_line

log = logging.getLogger(__name__)
T = TypeVar("T")


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_output(output: str | Path, inputs: Iterable[str | Path] = (), *, folder: bool | None = None) -> Path:
    """Refuse an ``output`` that is one of ``inputs`` or lies inside an input folder, an output path through a
    file, a folder where a file is needed (``folder=False``) or a file where a folder is needed (``folder=True``),
    and a location this process cannot create files in. Nothing is created. Returns ``output``."""
    output = Path(output)
    out = output.resolve()
    for inp in inputs:
        if inp in (None, ""):
            continue
        src = Path(inp).resolve()
        if out == src:
            raise UserError(f"output {output} is the input itself; choose another output path")
        if src.is_dir() and _inside(out, src):
            raise UserError(f"output {output} is inside the input folder {inp}; choose a path outside it")
    if out.exists():
        if folder is True and not out.is_dir():
            raise UserError(f"output {output} is a file, but a folder is needed here")
        if folder is False and out.is_dir():
            raise UserError(f"output {output} is a folder, but a file name is needed here")
        if out.is_file() and not os.access(out, os.W_OK):
            raise UserError(f"cannot write {output}: the file is read-only")
        probe = out if out.is_dir() else out.parent
    else:
        probe = out.parent
        while not probe.exists():
            probe = probe.parent
        if not probe.is_dir():
            raise UserError(f"cannot write {output}: {probe} is a file, not a folder")
    _probe_writable(probe, output)
    return output


def _probe_writable(folder: Path, output: Path) -> None:
    """Create and remove a temporary file in ``folder`` (the only reliable test: permissions, read-only mounts,
    /proc and /sys all answer it)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".write-test.", dir=folder)
    except OSError as exc:
        raise UserError(f"cannot write {output}: cannot create files in {folder} ({exc.strerror or exc})") from exc
    os.close(fd)
    os.unlink(tmp)


def destinations(files: Sequence[Path], input: Path, output: Path, suffix: str,
                 exts: Iterable[str] | None = None) -> list[Path]:
    """Output file per input file: a single input file → ``output`` itself when it has a suffix, else
    ``output/<stem><suffix>``; a folder → the same relative path under ``output`` with ``suffix``. Refuses, before
    any work: a destination that is one of the inputs, two inputs that would write the same file (``a.jpg`` and
    ``a.png``), a destination below an existing file, and (with ``exts``) an output file of another type."""
    single = input.is_file()
    if single and output.suffix and exts is not None and output.suffix.lower() not in set(exts):
        raise UserError(f"output {output}: unsupported file type {output.suffix!r} ({', '.join(sorted(exts))})")
    dests = []
    for f in files:
        if single:
            dests.append(output if output.suffix else output / (f.stem + suffix))
        else:
            dests.append(output / f.relative_to(input).with_suffix(suffix))
    sources = {f.resolve() for f in files}
    seen: dict[Path, Path] = {}
    for f, d in zip(files, dests):
        r = d.resolve()
        if r in sources:
            raise UserError(f"the output for {f} would overwrite the input {d}; choose another output folder")
        if r in seen:
            raise UserError(f"{seen[r]} and {f} would both be written to {d}; rename one of them")
        if r.is_dir():
            raise UserError(f"cannot write {d}: a folder of that name exists")
        seen[r] = f
        parent = r.parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            raise UserError(f"cannot write {d}: {parent} is a file, not a folder")
    return dests


def each_input(items: Sequence[T], fn: Callable[[T], object], *, progress: str | None = None,
               unit: str = "file") -> list[tuple[T, str]]:
    """``fn(item)`` for every item; an item whose ``fn`` raises :class:`UserError` is reported in one
    ``warning:`` line on stderr and skipped. Returns the failures as (item, reason). A single item is simply run
    (its error is the run's one error line)."""
    if len(items) == 1:
        fn(items[0])
        return []
    from tqdm import tqdm

    failures: list[tuple[T, str]] = []
    for item in tqdm(items, desc=progress, unit=unit, disable=not progress):
        try:
            fn(item)
        except UserError as exc:
            reason = one_line(exc)
            failures.append((item, reason))
            tqdm.write(f"warning: skipped {item}: {reason}", file=sys.stderr)  # on its own line, above the bar
    return failures


def raise_failures(failures: Sequence[tuple[object, str]], total: int, summary: Path | None = None) -> None:
    """One :class:`UserError` (→ one ``error:`` line, exit 2) when any input failed; the others are done."""
    if not failures:
        return
    names = ", ".join(str(Path(str(item)).name) for item, _ in failures[:5])
    more = f" and {len(failures) - 5} more" if len(failures) > 5 else ""
    where = f"; listed in {summary}" if summary else ""
    raise UserError(f"{len(failures)} of {total} inputs could not be processed ({names}{more}); "
                    f"the other {total - len(failures)} are written{where}")
