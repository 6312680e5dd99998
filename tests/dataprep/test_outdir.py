"""The output directory (dataprep/outdir.py, outdir_commit.py): prepare never deletes what it did not write,
refuses `--out .` and its kind, waits for a live run on the same DIR (the lock decides, not a pid), replaces DIR
in one step so that a kill -9 at any point leaves a complete version, reuses a cache only when every shard is
there (sha256 with --verify), says "disk full" in one line, and readers see one version while a prepare
replaces it.

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/dataprep/test_outdir.py -v
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from dataprep import cli, outdir, pipeline
from dataprep.look import html_report, inspect_tokens
from dataprep.look.query import connect
from dataprep.outdir import OutdirError, open_prepared_dir, release_prepared_dir
from dataprep.report import Progress
from dataprep.shards import sha256_file
from schemas.config import load_config
from tests.conftest import write_jsonl

ROOT = Path(__file__).resolve().parents[2]
CHATS = [{"messages": [{"role": "user", "content": f"Count to {i}."},
                       {"role": "assistant", "content": " ".join(str(k) for k in range(1, i + 2))}]}
         for i in range(40)]


@pytest.fixture
def data(tmp_path: Path, qwen_dir: Path) -> Path:
    """tmp_path/config.yaml, reading tmp_path/chat.jsonl."""
    write_jsonl(tmp_path / "chat.jsonl", CHATS)
    config = {"tokenizer_config": str(qwen_dir), "chat_template": "chatml",
              "datasets": [{"path": "chat.jsonl", "type": "chat_template"}]}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return tmp_path / "config.yaml"


def prep(config: Path, out: str = "out", seq: int | None = None, **kwargs: object) -> pipeline.Result:
    cfg = load_config(config, [f"sequence_len={seq}"] if seq else [])
    return pipeline.run_pipeline(cfg, config, config.parent / out, progress=Progress(enabled=False),
                                 **kwargs)  # type: ignore[arg-type]


def tessera(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(["prepare", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error(err: str) -> bool:
    """One `error:` line and no traceback (stderr also has a line per finished stage when not a terminal)."""
    return sum(line.startswith("error:") for line in err.splitlines()) == 1 and "Traceback" not in err


def complete(version: Path) -> dict:
    """The manifest of a version whose every shard matches its sha256: what a reader must always get."""
    manifest = json.loads((version / "manifest.json").read_text())
    for shard in manifest["shards"]:
        assert sha256_file(version / shard["file"]) == shard["sha256"], shard["file"]
    return manifest


def state(out: Path) -> list[str]:
    return sorted(p.name for p in outdir.state_dir(out).iterdir())


# ------------------------------------------------------------------------------------------------------------
# item 1: never delete what Tessera did not write


def test_refuses_a_folder_tessera_did_not_write(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mine = data.parent / "mine"
    (mine / "keep").mkdir(parents=True)
    (mine / "notes.txt").write_text("irreplaceable")
    (mine / "manifest.json").write_text('{"name": "not tessera"}')  # someone else's manifest is not ours
    code, _, err = tessera(str(data), "--out", str(mine), capsys=capsys)
    assert code == 2
    assert one_error(err) and "choose another --out" in err
    assert "has a manifest.json that is not a readable tessera manifest, so tessera did not write it" in err
    assert (mine / "notes.txt").read_text() == "irreplaceable" and (mine / "keep").is_dir()
    assert not outdir.state_dir(mine).exists()
    (mine / "manifest.json").unlink()
    code, _, err = tessera(str(data), "--out", str(mine), capsys=capsys)
    assert code == 2 and "has no tessera manifest.json" in err and (mine / "notes.txt").is_file()

    (data.parent / "elsewhere").mkdir()
    (data.parent / "linked").symlink_to("elsewhere")
    code, _, err = tessera(str(data), "--out", str(data.parent / "linked"), capsys=capsys)
    assert code == 2 and "is a symbolic link to elsewhere, not one tessera wrote" in err
    (data.parent / "afile").write_text("x")
    code, _, err = tessera(str(data), "--out", str(data.parent / "afile"), capsys=capsys)
    assert code == 2 and "is a file" in err

    (data.parent / "empty").mkdir()  # an empty folder holds nothing to lose: it becomes the link
    code, _, _ = tessera(str(data), "--out", str(data.parent / "empty"), capsys=capsys)
    assert code == 0 and (data.parent / "empty").is_symlink()
    complete(open_prepared_dir(data.parent / "empty"))


def test_cleanup_removes_only_names_tessera_creates(tmp_path: Path, data: Path) -> None:
    first = prep(data)
    look_alikes = [tmp_path / ".out.backup-2023", tmp_path / ".out.tmp-99999999", tmp_path / ".out.old-1"]
    for p in look_alikes:
        (p / "data").mkdir(parents=True)
    state_dir = outdir.state_dir(first.out)
    (state_dir / "notes.txt").write_text("mine")
    (state_dir / "tmp-7").mkdir()  # a crashed run's temp: no lock holder, so nobody is writing it
    (state_dir / "tmp-7" / "owner.json").write_text(json.dumps({"host": "h", "pid": 1, "started": "then"}))
    again = prep(data, force=True)
    assert all((p / "data").is_dir() for p in look_alikes)
    assert state(first.out) == sorted(["lock", "notes.txt", again.out.readlink().name])
    assert again.notes == ["removed tmp-7, left by a run that ended without finishing (pid 1 on h, started then)"]


def test_old_versions_stay_while_dir_is_missing(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = prep(data)
    version = first.out.parent / first.out.readlink()
    first.out.unlink()  # DIR gone: deleted by hand, or an older tessera crashed between its two renames

    def boom(*args: object) -> None:
        raise OSError("the run fails")

    monkeypatch.setattr(pipeline, "write_split", boom)
    with pytest.raises(OSError, match="the run fails"):
        prep(data)
    assert complete(version)  # possibly the only complete copy: kept
    monkeypatch.undo()
    with pytest.raises(OutdirError, match=r"is inside .*\.tessera\.out, where tessera keeps the versions of out"):
        prep(data, ".tessera.out/v-1")
    again = prep(data)
    assert not again.cached and not version.exists() and state(again.out) == ["lock", again.out.readlink().name]


def test_legacy_real_directory_is_swapped_in_one_step(tmp_path: Path, data: Path) -> None:
    """A DIR written before the link layout (a real directory with a manifest) is replaced by renameat2."""
    first = prep(data)
    version = open_prepared_dir(first.out)
    legacy = tmp_path / "old"
    shutil.copytree(version, legacy)
    release_prepared_dir(version)
    assert prep(data, "old").cached  # same fingerprint: reused as it is
    rebuilt = prep(data, "old", force=True)
    assert legacy.is_symlink() and state(legacy) == ["lock", legacy.readlink().name]
    assert complete(open_prepared_dir(legacy))["fingerprint"] == rebuilt.manifest["fingerprint"]


# ------------------------------------------------------------------------------------------------------------
# item 5: `--out .` and its kind, a full disk


def test_out_that_would_replace_the_inputs_is_one_line(data: Path, capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    base = data.parent
    write_jsonl(base / "inputs" / "more.jsonl", CHATS)
    more = ["--set", f"datasets.0.path={base / 'inputs' / 'more.jsonl'}"]
    monkeypatch.chdir(base)
    for out, said in [(".", "is the current directory"), (str(base), "is the current directory"),
                      ("..", "contains the current directory"), ("/", "is a filesystem root"),
                      ("inputs", f"contains the input file {base / 'inputs' / 'more.jsonl'}")]:
        code, _, err = tessera(str(data), *more, "--out", out, capsys=capsys)
        assert code == 2 and one_error(err) and said in err and "--out prepared/NAME" in err, (out, err)
    monkeypatch.chdir(ROOT)
    code, _, err = tessera(str(data), *more, "--out", str(base), capsys=capsys)
    assert code == 2 and f"output directory {base}: is the config's folder" in err
    assert sorted(p.name for p in base.iterdir()) == ["chat.jsonl", "config.yaml", "inputs"]


def test_disk_full_is_one_line_and_keeps_the_previous_output(data: Path, capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    out = data.parent / "out"
    assert tessera(str(data), "--out", str(out), capsys=capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def full(out_dir: Path, *args: object) -> None:
        (out_dir / "train-00000.arrow").write_bytes(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out_dir / "train-00000.arrow"))

    monkeypatch.setattr(pipeline, "write_split", full)
    code, _, err = tessera(str(data), "--out", str(out), "--force", capsys=capsys)
    assert code == 1 and one_error(err)
    assert "the disk is full" in err and "previous output is untouched" in err and "train-00000.arrow" in err
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert state(out) == ["lock", out.readlink().name]  # the temp is gone


# ------------------------------------------------------------------------------------------------------------
# item 2: the cache checks what it reuses


def test_cache_hit_checks_every_shard_and_survives_a_corrupt_manifest(
        data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = prep(data)
    shard = first.manifest["shards"][0]["file"]
    assert prep(data).cached

    (first.out / shard).unlink()
    again = prep(data)
    assert not again.cached and again.notes == [f"{first.out}: shard {shard} is missing: rebuilding"]
    assert again.manifest["shards"] == first.manifest["shards"]  # same bytes as before

    with open(again.out / shard, "ab") as f:
        f.write(b"\0")
    again = prep(data)
    assert not again.cached and "bytes, the manifest says" in again.notes[0]

    raw = bytearray((again.out / shard).read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # same size, other bytes: only sha256 (--verify) sees it
    (again.out / shard).write_bytes(bytes(raw))
    assert prep(data).cached
    code, out, _ = tessera(str(data), "--out", str(again.out), "--verify", capsys=capsys)
    assert code == 0
    assert f"note: {again.out}: shard {shard} does not match its sha256 in the manifest: rebuilding" in out
    assert sha256_file(again.out / shard) == first.manifest["shards"][0]["sha256"]

    (again.out / "manifest.json").write_text('{"fingerprint": ')
    rebuilt = prep(data)
    assert not rebuilt.cached and rebuilt.notes[0].startswith(f"{again.out}/manifest.json is unreadable (")
    assert state(rebuilt.out) == ["lock", rebuilt.out.readlink().name]


# ------------------------------------------------------------------------------------------------------------
# the lock: a second run waits for a live one; a crashed one's temp is cleaned


def hold_lock(out: Path, pid: int) -> int:
    """Take DIR's lock as a live run in another PID namespace would: its pid means nothing here."""
    outdir.state_dir(out).mkdir(parents=True, exist_ok=True)
    fd = os.open(outdir.state_dir(out) / "lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.pwrite(fd, json.dumps({"host": "other-container", "pid": pid, "started": "10:00"}).encode(), 0)
    return fd


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_live_lock_is_waited_for_whatever_its_pid(tmp_path: Path, data: Path) -> None:
    out = tmp_path / "out"
    pid = dead_pid()  # not alive in this namespace, yet the lock says the run is alive
    fd = hold_lock(out, pid)
    temp = outdir.state_dir(out) / "tmp-1"
    temp.mkdir()
    (temp / "owner.json").write_text(json.dumps({"host": "other-container", "pid": pid, "started": "10:00"}))
    with pytest.raises(OutdirError, match=rf"another tessera prepare is writing it \(pid {pid} on other-container"):
        prep(data, wait=False)
    waits: list[str] = []
    results: list[pipeline.Result] = []
    runner = threading.Thread(target=lambda: results.append(prep(data, wait_log=waits.append)), daemon=True)
    try:
        runner.start()
        deadline = time.time() + 120
        while not waits and time.time() < deadline:  # setup (tokenizer, probes) comes first
            time.sleep(0.1)
        time.sleep(1)
        assert runner.is_alive() and (temp / "owner.json").is_file() and not out.exists()
        assert waits == [f"waiting for another tessera prepare writing {out} (pid {pid} on other-container, "
                         "started 10:00) to finish ..."]
    finally:
        os.close(fd)  # the other run ends without finishing: its temp is now a crashed run's
    runner.join(120)
    assert results and not results[0].cached and not temp.exists()
    assert results[0].notes[0].startswith("removed tmp-1, left by a run that ended without finishing")


CHILD = """
import os, signal, sys, time
from pathlib import Path
from dataprep import cli, outdir_commit, pipeline
from dataprep.look import html_report, inspect_tokens
point, gate = sys.argv[1], Path(sys.argv[2])
out = os.path.abspath(sys.argv[3])

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

def at(module, name, before):
    real = getattr(module, name)
    def wrapped(*args, **kwargs):
        before(*args, **kwargs)
        return real(*args, **kwargs)
    setattr(module, name, wrapped)

def wait_for_gate(*args, **kwargs):
    (gate / "started").touch()
    while not (gate / "go").exists():
        time.sleep(0.05)

if point == "build":            # shards half written
    at(pipeline, "write_split", die)
elif point == "before-swap":    # tmp-N renamed to v-N, the new link made, DIR not yet replaced
    at(os, "rename", lambda src, dst: die() if os.path.abspath(dst) == out else None)
elif point == "after-swap":     # DIR points at the new version, the old one not yet removed
    at(outdir_commit, "_fsync", lambda p: die() if str(p) == os.path.dirname(out) else None)
elif point == "cleanup":        # the old version renamed to del-N, half removed
    at(outdir_commit, "_remove_version", lambda p: (p.rename(p.with_name("del-" + p.name[2:])), die()))
elif point == "gate":
    at(pipeline, "_build", wait_for_gate)
sys.exit(cli.main(["prepare", *sys.argv[4:]]))
"""


def child(point: str, gate: Path, out: Path, *args: str) -> subprocess.Popen[str]:
    """`tessera prepare ARGS --out OUT` in a process of its own, killed (or held) at `point`; its stdout and
    stderr go to gate/<point>.out and .err."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", CHILD, point, str(gate), str(out), *args, "--out", str(out)],
                            env=env, text=True, stdout=open(gate / f"{point}.out", "w"),
                            stderr=open(gate / f"{point}.err", "w"))


@pytest.mark.parametrize("point", ["build", "before-swap", "after-swap", "cleanup"])
def test_kill_9_at_each_step_leaves_a_complete_version_and_a_rerun_recovers(
        point: str, tmp_path: Path, data: Path) -> None:
    old = prep(data)
    new = prep(data, "reference", seq=256).manifest
    killed = child(point, tmp_path, old.out, str(data), "--set", "sequence_len=256")
    assert killed.wait(300) == -signal.SIGKILL, (tmp_path / f"{point}.err").read_text()
    # DIR is one complete version at every point: the old one until the swap, the new one after it.
    version = open_prepared_dir(old.out)
    swapped = point in ("after-swap", "cleanup")
    assert complete(version)["fingerprint"] == (new if swapped else old.manifest)["fingerprint"]
    release_prepared_dir(version)
    rerun = prep(data, seq=256)
    assert rerun.cached == swapped
    if point == "build":  # the killed run's lock died with it: its temp is cleaned, its owner named
        assert rerun.notes[0].startswith(f"removed tmp-2, left by a run that ended without finishing (pid {killed.pid}")
    assert rerun.manifest["shards"] == new["shards"]  # byte-identical to a run that was never killed
    assert state(old.out) == ["lock", old.out.readlink().name]  # no temp, link or old version left


def test_two_processes_on_one_out_the_second_waits_then_reuses(tmp_path: Path, data: Path) -> None:
    out = tmp_path / "out"
    first = child("gate", tmp_path, out, str(data))
    deadline = time.time() + 300
    while not (tmp_path / "started").exists():
        assert first.poll() is None and time.time() < deadline
        time.sleep(0.1)
    second = child("none", tmp_path, out, str(data))
    while "waiting for another tessera prepare" not in (tmp_path / "none.err").read_text():
        assert second.poll() is None and time.time() < deadline
        time.sleep(0.1)
    time.sleep(1)
    assert second.poll() is None  # still waiting for the lock, not building
    (tmp_path / "go").touch()
    assert first.wait(300) == 0 and second.wait(300) == 0
    err = (tmp_path / "none.err").read_text()
    assert f"waiting for another tessera prepare writing {out} (pid {first.pid} on " in err
    assert "up to date:" in (tmp_path / "none.out").read_text()
    assert state(out) == ["lock", out.readlink().name]


# ------------------------------------------------------------------------------------------------------------
# readers: one version, even while a prepare replaces DIR


def test_a_reader_keeps_its_version_while_prepare_replaces_dir(data: Path) -> None:
    first = prep(data)
    held = open_prepared_dir(first.out)
    assert open_prepared_dir(held) == held and open_prepared_dir(first.out) == held
    second = prep(data, seq=256)
    now = open_prepared_dir(second.out)
    assert now != held and complete(held)["fingerprint"] == first.manifest["fingerprint"]
    assert connect(held).sql("select sequence_len from manifest").fetchall() == [(2048,)]
    assert second.notes == [f"kept the old version {held} while a reader (query, report, inspect, trainer) has it "
                            "open; a later run removes it"]
    # report and inspect read through the link and name DIR, not its version folder
    assert "<title>Tessera report: out</title>" in html_report.build(second.out)
    assert html_report.default_out(second.out) == second.out.parent / "out.report.html"
    assert inspect_tokens.build(second.out, sample=0)
    release_prepared_dir(held)
    prep(data, force=True)
    assert not held.exists()


def test_readers_in_a_loop_during_replacements_always_see_one_complete_version(tmp_path: Path,
                                                                               data: Path) -> None:
    out = tmp_path / "out"
    subprocess.run([sys.executable, "-m", "dataprep.cli", "prepare", str(data), "--out", str(out)],
                   env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True, capture_output=True)
    script = (f"from dataprep import cli\nfor n in (256, 512, 256):\n"
              f"    assert cli.main(['prepare', {str(data)!r}, '--out', {str(out)!r}, '--set', "
              f"f'sequence_len={{n}}']) == 0\n")
    writer = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(ROOT)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen: set[str] = set()
    reads = 0
    while writer.poll() is None or reads == 0:
        version = open_prepared_dir(out)
        manifest = complete(version)
        rows = connect(version, with_vocab=False).sql("select count(*) from packed").fetchall()
        assert rows == [(manifest["stats"]["rows"],)]
        seen.add(manifest["fingerprint"])
        release_prepared_dir(version)
        reads += 1
    assert writer.returncode == 0, writer.stderr.read() if writer.stderr else ""
    assert len(seen) >= 2 and reads >= 3
