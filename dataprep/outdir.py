"""The output directory: what prepare may replace, how it replaces it in one step, and how readers open it.

    parent/DIR -> .tessera.DIR/v-3       a relative symbolic link, swapped in one rename(2)
    parent/.tessera.DIR/                  everything Tessera writes for DIR, and nothing else
        lock                              flock(2), exclusive for a prepare run's whole length; holds its owner
        tmp-4/owner.json                  the run in progress (host, pid, pid namespace, start time)
        v-3/                              complete versions (manifest.json written last); readers hold a
                                          shared flock on the directory of the version they read

A prepare run: refuse a DIR that Tessera did not write (exit 2) -> take the lock (waiting for a live run) ->
remove what crashed runs left (only the exact names above, only under the lock: the lock, not a pid, says
whether a run is alive, so a live run in another PID namespace is never touched) -> reuse the current version if
its fingerprint matches and its shards are all there -> else build tmp-N, rename it to v-N, point a new link at
it and rename the link over DIR. A kill -9 at any point leaves DIR pointing at a complete version (the old or
the new one) or, on a first run, absent. Old versions are deleted only once DIR points at a newer one, and
only when no reader holds them.

A DIR that is a real directory with a Tessera manifest (written before this layout, or copied) is swapped with
the link by renameat2(RENAME_EXCHANGE), also in one step.

This module holds the layout, the checks before a run (where DIR may be, whether it is ours, whether the current
version can be reused) and the readers. The run itself (the lock, the temp folder, the swap, the cleanup) is
outdir_commit.py.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from pathlib import Path
from typing import Any


class OutdirError(Exception):
    """DIR cannot be written as asked (not Tessera's, the current directory, ...): a config/usage error."""

    exit_code = 2


class NotPrepared(Exception):
    """A reader was pointed at something that is not a complete prepared directory."""


def state_dir(out: Path) -> Path:
    return out.parent / f".tessera.{out.name}"


def absolute(out: Path) -> Path:
    """out made absolute with its parent's links resolved, but not a link at out itself (that is ours)."""
    out = Path(os.path.abspath(out))
    return out.parent.resolve() / out.name


# ------------------------------------------------------------------------------------------------------------
# before a run: where DIR may be, and whether it is ours


def check_location(out: Path, config_path: Path, inputs: list[Path]) -> None:
    real = absolute(out)
    fix = "use a folder of its own, e.g. --out prepared/NAME (or dataset_prepared_path: prepared/NAME)"
    home = None
    with contextlib.suppress(RuntimeError, KeyError):  # no HOME, no passwd entry
        home = Path.home().resolve()
    if real.parent == real or real == home:
        raise OutdirError(f"output directory {out}: is {'a filesystem root' if real.parent == real else 'your home'}"
                          f" folder, which prepare would replace; {fix}")
    if real.parent.name.startswith(".tessera."):
        raise OutdirError(f"output directory {out}: is inside {real.parent}, where tessera keeps the versions of "
                          f"{real.parent.name.removeprefix('.tessera.')}; {fix}")
    named = [("the current directory", Path.cwd().resolve()), ("the config's folder", config_path.resolve().parent)]
    for what, where in named + [(f"the input file {p}", p.resolve()) for p in inputs]:
        if where == real or where.is_relative_to(real):
            rel = "is" if where == real else "contains"
            raise OutdirError(f"output directory {out}: {rel} {what}, which prepare would replace; {fix}")


def _our_link(out: Path) -> bool:
    target = os.readlink(out)
    return re.fullmatch(rf"\.tessera\.{re.escape(out.name)}/v-\d+", target) is not None


def _tessera_manifest(path: Path) -> bool:
    try:
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and "tessera_version" in manifest and "fingerprint" in manifest


def check_ours(out: Path) -> None:
    """Refuse a DIR that Tessera did not write: it would be replaced, and whatever is in it lost."""
    fix = "choose another --out (or dataset_prepared_path), or move it away yourself if it is disposable"
    if out.is_symlink():
        if not _our_link(out):
            raise OutdirError(f"output directory {out}: is a symbolic link to {os.readlink(out)}, not one tessera "
                              f"wrote; {fix}")
    elif out.is_dir():
        if any(out.iterdir()) and not _tessera_manifest(out):
            # An unreadable manifest in a real directory may be anyone's file: only our own versions are rebuilt.
            which = ("a manifest.json that is not a readable tessera manifest" if (out / "manifest.json").exists()
                     else "no tessera manifest.json")
            raise OutdirError(f"output directory {out}: exists, is not empty and has {which}, so tessera did not "
                              f"write it (or cannot tell) and will not replace it; {fix}")
    elif out.exists():
        raise OutdirError(f"output directory {out}: is a file; {fix}")


def current(out: Path) -> Path | None:
    """The complete version DIR points at now (DIR itself if it is a real directory), or None."""
    if out.is_symlink():
        target = out.parent / os.readlink(out)
        return target if (target / "manifest.json").is_file() else None
    return out if (out / "manifest.json").is_file() else None


def reusable(out: Path, fingerprint: str, verify: bool, notes: list[str]) -> dict[str, Any] | None:
    """The current manifest if it matches `fingerprint` and every shard it lists is there (size; sha256 with
    verify); otherwise None, with a note saying why it is rebuilt."""
    version = current(out)
    if version is None:
        return None
    try:
        manifest = json.loads((version / "manifest.json").read_text(encoding="utf-8"))
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        notes.append(f"{out}/manifest.json is unreadable ({e}): rebuilding")
        return None
    if manifest.get("fingerprint") != fingerprint:
        return None
    problem = _missing(version, manifest, verify)
    if problem:
        notes.append(f"{out}: {problem}: rebuilding")
        return None
    return manifest


def _missing(version: Path, manifest: dict[str, Any], verify: bool) -> str | None:
    from dataprep.shards import ShardPathError, manifest_problem, sha256_file, shard_path

    for name in ("samples.parquet", "quarantine.parquet", "duplicates.parquet"):
        if not (version / name).is_file():
            return f"{name} is missing"
    if (problem := manifest_problem(manifest)) is not None:
        return f"the manifest is malformed ({problem})"
    try:
        for shard in manifest["shards"]:
            path = shard_path(version, shard["file"])
            if not path.is_file():
                return f"shard {shard['file']} is missing"
            if "bytes" in shard and path.stat().st_size != shard["bytes"]:
                return f"shard {shard['file']} has {path.stat().st_size} bytes, the manifest says {shard['bytes']}"
            if verify and sha256_file(path) != shard["sha256"]:
                return f"shard {shard['file']} does not match its sha256 in the manifest"
    except (KeyError, TypeError) as e:
        return f"the manifest's shard list is malformed ({e!r})"
    except ShardPathError as e:
        return str(e)
    return None


# ------------------------------------------------------------------------------------------------------------
# readers


_HELD: dict[Path, int] = {}


def open_prepared_dir(path: Path) -> Path:
    """The concrete, complete directory of the version DIR names now, held for this process's lifetime.

    Resolves DIR once (a Tessera link -> its v-N folder; a real prepared directory -> itself) and takes a shared
    flock on that folder, so a prepare that replaces DIR meanwhile leaves this version in place until the
    process exits (or release_prepared_dir). Read every file through the returned path, never through DIR
    again, and all of them come from one version. Calling it on the returned path returns the same path.
    Raises NotPrepared (message says what to do) if there is no complete prepared directory at `path`."""
    for _ in range(20):
        version = _version_of(path)
        if version in _HELD:
            return version
        try:
            fd = os.open(version, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            continue  # removed after the link was read: read the link again
        with contextlib.suppress(OSError):  # no flock on this filesystem: read unprotected rather than not at all
            fcntl.flock(fd, fcntl.LOCK_SH)
        with contextlib.suppress(FileNotFoundError):
            if os.stat(version).st_ino == os.fstat(fd).st_ino and (version / "manifest.json").is_file():
                _HELD[version] = fd
                return version
        os.close(fd)
    raise NotPrepared(f"{path}: keeps changing while being opened (a prepare replacing it in a loop?); try again")


def release_prepared_dir(version: Path) -> None:
    """Let a prepare delete this version (for long-lived readers that switch to a newer one)."""
    fd = _HELD.pop(version, None)
    if fd is not None:
        os.close(fd)


def _version_of(path: Path) -> Path:
    absolute_path = absolute(path)
    if path.is_symlink() and _our_link(path):
        version = absolute_path.parent / os.readlink(path)
        if not version.is_dir():
            raise NotPrepared(f"{path}: points at {os.readlink(path)}, which is gone; run tessera prepare again")
        return version
    resolved = path.resolve()
    if not (resolved / "manifest.json").is_file():
        hint = " (it is being written, or the run crashed)" if resolved.is_dir() else ""
        raise NotPrepared(f"{path}: not a prepared directory, no manifest.json{hint}; create one with "
                          "`tessera prepare CONFIG`")
    return resolved
