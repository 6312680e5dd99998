"""A prepare run's side of the output directory: the lock it holds, its temp folder, the swap that publishes a
new version in one step, and the removal of what crashed runs and superseded versions left.

The layout and the whole protocol (what a kill -9 at each step leaves, why the lock and not a pid says whether a
run is alive) are in outdir.py's docstring; the checks before a run and the readers are there too.
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

from dataprep.outdir import OutdirError, check_ours, current, state_dir

_ENTRY = re.compile(r"(tmp|v|legacy|link|del)-(\d+)")
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFull(OutdirError):
    """The disk filled up while writing; the previous output is untouched."""

    exit_code = 1


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
