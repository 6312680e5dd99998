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
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import errno
import fcntl
import json
import os
import re
import shutil
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_ENTRY = re.compile(r"(tmp|v|legacy|link|del)-(\d+)")
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class OutdirError(Exception):
    """DIR cannot be written as asked (not Tessera's, the current directory, ...): a config/usage error."""

    exit_code = 2


class DiskFull(OutdirError):
    """The disk filled up while writing; the previous output is untouched."""

    exit_code = 1


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
# during a run: the lock, the temp folder, the swap


def owner() -> dict[str, Any]:
    namespace = None
    with contextlib.suppress(OSError):
        namespace = os.readlink("/proc/self/ns/pid")  # pids repeat across containers: say which one
    return {"host": socket.gethostname(), "pid": os.getpid(), "pid_namespace": namespace,
            "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}


def _describe(info: str) -> str:
    try:
        o = json.loads(info)
        return f"pid {o['pid']} on {o['host']}, started {o['started']}"
    except (ValueError, KeyError, TypeError):
        return "owner unknown"


@dataclass
class Claim:
    out: Path
    state: Path
    notes: list[str]
    tmp: Path | None = None

    def new_tmp(self) -> Path:
        n = 1 + max((int(m.group(2)) for p in self.state.iterdir() if (m := _ENTRY.fullmatch(p.name))), default=0)
        self.tmp = self.state / f"tmp-{n}"
        self.tmp.mkdir()
        (self.tmp / "owner.json").write_text(json.dumps(owner()) + "\n")
        return self.tmp

    def publish(self) -> None:
        """tmp-N (manifest written) -> v-N, then DIR -> v-N in one rename; then drop superseded versions."""
        assert self.tmp is not None and (self.tmp / "manifest.json").is_file()
        n = self.tmp.name.split("-")[1]
        (self.tmp / "owner.json").unlink()
        # On disk before the renames that make it visible: after a power cut DIR is never a version whose files
        # the kernel had not written yet.
        for p in [*self.tmp.rglob("*"), self.tmp]:
            _fsync(p)
        version = self.state / f"v-{n}"
        self.tmp.rename(version)
        self.tmp = None
        link = self.state / f"link-{n}"
        link.symlink_to(f"{self.state.name}/{version.name}")
        if self.out.is_symlink() or not self.out.exists():
            os.rename(link, self.out)  # replaces a link atomically
        else:
            # A real directory (written before this layout, or empty): swap it with the link in one step, then it
            # is an old version like any other.
            if not _exchange(link, self.out):
                os.rename(self.out, self.state / f"legacy-{n}")
                os.rename(link, self.out)
            else:
                os.rename(link, self.state / f"legacy-{n}")
        _fsync(self.state)
        _fsync(self.out.parent)
        self.clean()

    def clean(self) -> None:
        """Remove what earlier runs left in the state folder. Only called with the lock held, so no other run
        is alive; old versions go only while DIR points at a complete one (never delete the only copy)."""
        keep = current(self.out)
        for p in sorted(self.state.iterdir()):
            m = _ENTRY.fullmatch(p.name)
            if m is None or p in (self.tmp, keep):
                continue
            kind = m.group(1)
            if kind in ("tmp", "del", "link"):
                if kind == "tmp":
                    info = (p / "owner.json").read_text() if (p / "owner.json").is_file() else "{}"
                    self.notes.append(f"removed {p.name}, left by a run that ended without finishing "
                                      f"({_describe(info)})")
                _remove(p)
            elif keep is not None and not _remove_version(p):
                self.notes.append(f"kept the old version {p} while a reader (query, report, inspect, trainer) "
                                  "has it open; a later run removes it")


@contextlib.contextmanager
def claim(out: Path, notes: list[str], wait: bool = True,
          log: Callable[[str], None] | None = None) -> Iterator[Claim]:
    """Hold DIR's lock for the body: refuse a DIR Tessera did not write, wait for (or, wait=False, refuse) a live
    run, clean what crashed runs left. A temp folder made with new_tmp() is removed unless published."""
    check_ours(out)
    state = state_dir(out)
    try:
        state.mkdir(parents=True, exist_ok=True)
        fd = os.open(state / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        if e.errno in _DISK_FULL:
            raise  # run_pipeline's disk-full message
        raise OutdirError(f"output directory {out}: cannot create {state} ({e.strerror}); choose a writable "
                          "--out") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = _describe(os.pread(fd, 4096, 0).decode(errors="replace"))
            if not wait:
                raise OutdirError(f"output directory {out}: another tessera prepare is writing it ({other}); wait "
                                  "for it to finish or use another --out") from None
            (log or print)(f"waiting for another tessera prepare writing {out} ({other}) to finish ...")
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:  # ENOLCK, EOPNOTSUPP: a filesystem without flock, where two runs could collide
            raise OutdirError(f"output directory {out}: cannot lock {state / 'lock'} ({e.strerror}); choose an --out "
                              "on a local filesystem") from None
        check_ours(out)  # the other run may have replaced it
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(owner()).encode(), 0)
        c = Claim(out, state, notes)
        c.clean()
        try:
            yield c
        finally:
            if c.tmp is not None:
                _remove(c.tmp)
    finally:
        os.close(fd)  # releases the lock


def disk_full(e: Exception, out: Path) -> DiskFull | None:
    """The one-line error for a full disk, from an OSError or a library's error wrapping one (Polars, Arrow)."""
    if getattr(e, "errno", None) not in _DISK_FULL and not any(os.strerror(n) in str(e) for n in _DISK_FULL):
        return None
    where = f" ({e.filename})" if getattr(e, "filename", None) else ""
    return DiskFull(f"output directory {out}: the disk is full{where}; the previous output is untouched. Free "
                    "space on that filesystem or choose an --out on another one")


def _remove(p: Path) -> None:
    if p.is_symlink() or not p.is_dir():
        p.unlink(missing_ok=True)
    else:
        shutil.rmtree(p, ignore_errors=True)


def _remove_version(p: Path) -> bool:
    """Delete a complete old version unless a reader holds its shared lock. Renamed to del-N first, so that a
    crash halfway through never leaves a partial v-N."""
    try:
        fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return True
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        doomed = p.with_name("del-" + p.name.split("-")[1])
        p.rename(doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        return True
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """renameat2(a, b, RENAME_EXCHANGE): both names swap in one step. False where unsupported."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
