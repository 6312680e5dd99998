"""Globs and directory walks over input data that end on symlink loops and list each file once.

`glob.glob(recursive=True)` follows directory symlinks without remembering where it has been: a link to a
parent folder makes `**` read each file once per level until the path is too long (41 times on Linux), and two
such links make it run for hours. Here every directory is entered at most once per pattern position (by device
and inode), and a file reached by two paths (a symlink, a hard link, two overlapping patterns) is listed once,
under the path that sorts first. Results are sorted, so sample ids do not depend on the file system's order.
"""

from __future__ import annotations

import fnmatch
import glob
import os
from collections.abc import Iterable
from pathlib import Path


def expand_glob(pattern: str | Path) -> list[Path]:
    """Files matching `pattern` (`*`, `?`, `[...]` within one name; `**` any number of folders, as with
    glob.glob(recursive=True); names starting with '.' only when the pattern names them)."""
    parts = Path(pattern).parts
    fixed = 0
    while fixed < len(parts) and not glob.has_magic(parts[fixed]):
        fixed += 1
    if fixed == len(parts):
        return [Path(pattern)] if Path(pattern).is_file() else []
    base = Path(*parts[:fixed]) if fixed else Path(".")
    return unique_files(_match(base, parts[fixed:], prefix=fixed > 0))


def walk_files(root: Path) -> list[Path]:
    """Every file under `root` (following directory symlinks, each folder once), sorted, each file once."""
    return unique_files(_match(root, ("**", "*"), prefix=True))


def unique_files(paths: Iterable[Path]) -> list[Path]:
    """Sorted, with files that are the same file on disk (same device and inode) kept once: the first path."""
    seen: set[tuple[int, int]] = set()
    out = []
    for p in sorted(set(paths)):
        try:
            st = p.stat()
        except OSError:  # a dangling symlink: not a data file
            continue
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            out.append(p)
    return out


def _match(base: Path, rest: tuple[str, ...], prefix: bool) -> list[Path]:
    # Depth-first over (folder, position in the pattern) states; a state is visited once, which is what ends
    # symlink loops: a link back to an ancestor leads to a (folder, position) already seen.
    found: list[Path] = []
    visited: set[tuple[int, int, int]] = set()
    stack = [(base, 0)]
    while stack:
        folder, k = stack.pop()
        try:
            st = folder.stat()
        except OSError:
            continue
        if (st.st_dev, st.st_ino, k) in visited:
            continue
        visited.add((st.st_dev, st.st_ino, k))
        entries = _entries(folder)
        part, last = rest[k], k == len(rest) - 1
        if part == "**":
            if last:  # a trailing ** matches the files of this folder and of every folder below
                found += [_join(folder, e.name, prefix) for e in entries if _is_file(e) and _visible(e.name, part)]
            else:
                stack.append((folder, k + 1))  # ** as zero folders
            stack += [(_join(folder, e.name, prefix), k) for e in entries if _is_dir(e) and _visible(e.name, part)]
            continue
        for e in entries:
            if not (fnmatch.fnmatchcase(e.name, part) and _visible(e.name, part)):
                continue
            if last and _is_file(e):
                found.append(_join(folder, e.name, prefix))
            elif not last and _is_dir(e):
                stack.append((_join(folder, e.name, prefix), k + 1))
    return found


def _entries(folder: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name, reverse=True)  # reversed: the stack pops them in order
    except OSError:  # unreadable or vanished folder: nothing matches in it, as with glob.glob
        return []


def _join(folder: Path, name: str, prefix: bool) -> Path:
    return folder / name if prefix or folder != Path(".") else Path(name)


def _visible(name: str, part: str) -> bool:
    return not name.startswith(".") or part.startswith(".")


def _is_file(e: os.DirEntry[str]) -> bool:
    try:
        return e.is_file()
    except OSError:
        return False


def _is_dir(e: os.DirEntry[str]) -> bool:
    try:
        return e.is_dir()
    except OSError:
        return False
