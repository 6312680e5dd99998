"""Dataset folders as `datasets` (5.x) reads them: which files make up a split, and which rows a split slice selects.

A datasets[] entry whose `path` is a folder is read the way `load_dataset(folder, name, split=...)` or
`load_from_disk(folder)` reads it:
- a `save_to_disk()` folder: a Dataset (state.json lists its data-*.arrow files) or a DatasetDict
  (dataset_dict.json lists the splits, one Dataset folder each);
- a Hub dataset repo (a local clone): README.md's YAML `configs:` (chosen by `name`, else the default one) name
  the data files of each split; without them the split is inferred from file and folder names with datasets'
  own patterns (`data/<split>-00000-of-00002.parquet`, then `train/`, `test/` folders, then `train.jsonl`,
  `my-test-file.csv`, …), and a folder with no split names is all `train`.
Metadata files (README.md, dataset_info.json, state.json, dataset_dict.json, .gitattributes and any other
hidden file or folder) are never read as rows; symlinked folders are not followed (no loops, no file twice).
A single file, a glob or `data_files` has one split, `train`.

`split` takes datasets' slice syntax: `train`, `test[:20%]`, `train[100:200]`, `train[10%:20%]`, `train[-50:]`,
`train[:10%](pct1_dropremainder)`, and `+` between parts; percent bounds are rounded as datasets rounds them.
Sample ids and source locations stay per file: a selected row keeps its row number within its own file.
"""

from __future__ import annotations

import glob
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import yaml

from dataprep.load import EXTENSIONS, InputError, check_readable, file_format, is_dir, read_batches, resolve_files
from schemas.config import DatasetConfig
from schemas.splits import parse_split

SPLIT_KEYWORDS = {"train": ["train", "training"], "validation": ["validation", "valid", "dev", "val"],
                  "test": ["test", "testing", "eval", "evaluation"]}
_SEP = "-._ 0-9"  # datasets' NON_WORDS_CHARS
_IN_FILENAME = ["**/{keyword}[{sep}]*", "**/*[{sep}]{keyword}[{sep}]*"]
_IN_DIR_NAME = ["**/{keyword}/**", "**/{keyword}[{sep}]*/**", "**/*[{sep}]{keyword}/**",
                "**/*[{sep}]{keyword}[{sep}]*/**"]
_SHARDED = re.compile(r"data/(?P<split>[^/]+?)-\d{5}-of-\d{5}[^/]*\.[^/]*")
METADATA_FILES = {"README.md", "config.json", "dataset_info.json", "dataset_infos.json", "dummy_data.zip",
                  "dataset_dict.json", "state.json"}
@dataclass(frozen=True, slots=True)
class SourceFile:
    path: Path
    rows: tuple[int, int] | None = None  # [start, stop) of the file's rows to read; None: every row


def resolve_sources(ds: DatasetConfig, config_dir: Path) -> list[SourceFile]:
    """The files (and row ranges) that ds.split selects, in the order datasets reads them."""
    parts = parse_split(ds.split)
    where, splits = dataset_splits(ds, config_dir)
    missing = sorted({p.split for p in parts} - set(splits))
    if missing:
        raise InputError(f"dataset '{ds.path}': no split {', '.join(repr(s) for s in missing)} in {where} (it has "
                         f"{', '.join(splits) or 'none'}); fix `split` in the config")
    out: list[SourceFile] = []
    for part in parts:
        files = splits[part.split]
        for f in files:
            check_readable(f)
        if part.start is None and part.stop is None:
            out += [SourceFile(f) for f in files]
            continue
        counts = [_count_rows(f, ds) for f in files]
        try:
            a, b = part.bounds(sum(counts))
        except ValueError as e:
            raise InputError(f"dataset '{ds.path}': split '{ds.split}': {e}") from None
        offset = 0
        for f, n in zip(files, counts, strict=True):
            lo, hi = max(a - offset, 0), min(b - offset, n)
            if lo < hi:
                out.append(SourceFile(f, None if (lo, hi) == (0, n) else (lo, hi)))
            offset += n
    return out


def dataset_splits(ds: DatasetConfig, config_dir: Path) -> tuple[str, dict[str, list[Path]]]:
    """(where, split name -> files) of one datasets[] entry."""
    if glob.has_magic(ds.path) or ds.data_files:
        return ds.path, {"train": resolve_files(ds, config_dir)}
    root = next((base / ds.path for base in (config_dir, Path.cwd()) if is_dir(base / ds.path, ds)), None)
    if root is None:
        return ds.path, {"train": resolve_files(ds, config_dir)}  # a file, or its not-found error
    if (root / "dataset_dict.json").is_file():
        names = _json(root / "dataset_dict.json").get("splits") or []
        if not isinstance(names, list) or not all(isinstance(n, str) and Path(n).name == n for n in names):
            raise InputError(f"{root / 'dataset_dict.json'}: `splits` must be a list of split folder names; save the "
                             "dataset again with save_to_disk")
        return str(root), {str(s): _saved_dataset_files(root / str(s)) for s in names}
    if (root / "state.json").is_file():
        state = _json(root / "state.json")
        return str(root), {str(state.get("_split") or "train"): _saved_dataset_files(root)}
    files = _listing(root)
    configs = _readme_configs(root)
    if configs:
        config = _choose_config(root, configs, ds.name)
        if config.get("data_files") is not None:
            splits = _config_splits(root, config["data_files"], files)
        else:
            data_dir = str(config.get("data_dir") or "").strip("/")
            splits = _inferred_splits([f for f in files if not data_dir or f.startswith(data_dir + "/")])
    else:
        if ds.name not in (None, "default"):
            raise InputError(f"dataset '{ds.path}': name '{ds.name}', but {root / 'README.md'} defines no configs; "
                             "remove `name`")
        splits = _inferred_splits(files)
    if not splits:
        raise InputError(f"dataset '{ds.path}': no data files found in {root} (looked for "
                         f"{', '.join(sorted(EXTENSIONS))} files outside hidden folders)")
    return str(root), {s: [root / f for f in rel] for s, rel in splits.items()}


def _json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        raise InputError(f"{path}: not a readable JSON file ({e}); save the dataset again with save_to_disk") from None
    if not isinstance(value, dict):
        raise InputError(f"{path}: expected a JSON object; save the dataset again with save_to_disk")
    return value


def _saved_dataset_files(folder: Path) -> list[Path]:
    """A save_to_disk Dataset: its Arrow files in the order state.json lists them."""
    state = _json(folder / "state.json")
    listed = state.get("_data_files") or []
    names = [str(f.get("filename", "")) for f in listed if isinstance(f, dict)] if isinstance(listed, list) else []
    files = [folder / n for n in names if n and Path(n).name == n]
    lost = [str(f) for f in files if not f.is_file()]
    if lost or not files:
        raise InputError(f"{folder / 'state.json'}: lists data files that are not there ({', '.join(lost) or 'none'}); "
                         "copy the whole folder again or save the dataset again with save_to_disk")
    return files


def _listing(root: Path) -> list[str]:
    """Data files under root, as sorted posix paths relative to it, the way datasets globs: hidden and
    `__special__` files and folders and metadata files are left out; symlinked folders are not entered."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=_unlistable):
        dirnames[:] = [d for d in dirnames if not d.startswith((".", "__"))]
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        for name in filenames:
            if name.startswith((".", "__")) or name in METADATA_FILES or not _is_data_file(name):
                continue
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if (root / rel).is_file():
                out.append(rel)
    return sorted(out, key=lambda rel: rel.split("/"))  # Path order (as before), so sample ids do not move


def _is_data_file(name: str) -> bool:
    # datasets' rule: any of the name's dotted suffixes is a data extension (train.jsonl.gz, x.parquet)
    return any(f".{s}".lower() in EXTENSIONS for s in name.split(".")[1:])


def _pattern(glob_pattern: str) -> re.Pattern[str]:
    """fsspec (>= 2023.12) glob semantics on posix relative paths: ** spans folders, * and ? do not."""
    out, i = [], 0
    while i < len(glob_pattern):
        if glob_pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif glob_pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob_pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif glob_pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif glob_pattern[i] == "[" and "]" in glob_pattern[i + 2:]:
            j = glob_pattern.index("]", i + 2)
            body = glob_pattern[i + 1:j]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body).replace("\\", "\\\\") + "]")
            i = j + 1
        else:
            out.append(re.escape(glob_pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _match(patterns: list[str], files: list[str]) -> list[str]:
    """Files matching the patterns, pattern by pattern (each sorted), each file once."""
    out: dict[str, None] = {}
    for p in patterns:
        rx = _pattern(p.removeprefix("./"))
        out.update((f, None) for f in files if rx.match(f))
    return list(out)


def _inferred_splits(files: list[str]) -> dict[str, list[str]]:
    """datasets' _get_data_files_patterns: the first rule that finds files decides every split."""
    sharded: dict[str, list[str]] = {}
    for f in files:
        if m := _SHARDED.fullmatch(f):
            sharded.setdefault(m["split"], []).append(f)
    if sharded:
        order = [s for s in SPLIT_KEYWORDS if s in sharded] + sorted(set(sharded) - set(SPLIT_KEYWORDS))
        return {s: sharded[s] for s in order}
    for base in (_IN_DIR_NAME, _IN_FILENAME):
        found = {split: _match([p.format(keyword=k, sep=_SEP) for k in keywords for p in base], files)
                 for split, keywords in SPLIT_KEYWORDS.items()}
        found = {s: f for s, f in found.items() if f}
        if found:
            return found
    return {"train": files} if files else {}


def _unlistable(e: OSError) -> None:
    # os.walk skips a folder it cannot list without a word, and with it every data file inside
    raise InputError(f"{e.filename}: cannot be listed ({e.strerror}); its data files would be left out: make it "
                     "readable (chmod a+rx) or move it out of the dataset folder") from None


def _readme_configs(root: Path) -> list[dict[str, Any]]:
    readme = root / "README.md"
    if not readme.is_file():
        return []
    try:
        text = readme.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise InputError(f"{readme}: cannot be read ({e.strerror}); make it readable (chmod a+r): its `configs` "
                         "decide which files are read") from None
    m = re.match(r"^---\s*\n(.*?\n)---\s*(\n|$)", text, re.S)
    if not m:
        return []
    try:
        meta = yaml.safe_load(m.group(1)) or {}
    except yaml.YAMLError as e:
        raise InputError(f"{readme}: the YAML header is not valid ({' '.join(str(e).split())}); fix it") from None
    configs = meta.get("configs") if isinstance(meta, dict) else None
    if configs is None:
        return []
    if not isinstance(configs, list) or not all(isinstance(c, dict) for c in configs):
        raise InputError(f"{readme}: `configs` must be a list of mappings with config_name and data_files; fix it")
    return configs


def _choose_config(root: Path, configs: list[dict[str, Any]], name: str | None) -> dict[str, Any]:
    by_name = {str(c.get("config_name", "default")): c for c in configs}
    if name is not None:
        if name not in by_name:
            raise InputError(f"dataset '{root}': no config '{name}' in README.md (it has {', '.join(by_name)}); "
                             "fix `name` in the config")
        return by_name[name]
    defaults = [n for n, c in by_name.items() if len(by_name) == 1 or n == "default" or c.get("default")]
    if len(defaults) != 1:
        raise InputError(f"dataset '{root}': README.md defines configs {', '.join(by_name)} and "
                         f"{'several defaults' if defaults else 'no default'}; set `name` to one of them")
    return by_name[defaults[0]]


def _config_splits(root: Path, data_files: Any, files: list[str]) -> dict[str, list[str]]:
    """README.md's data_files: a pattern, a list of them (train), or [{split, path: pattern(s)}]."""
    if isinstance(data_files, str):
        data_files = [data_files]
    patterns: dict[str, list[str]] = {}
    for item in data_files if isinstance(data_files, list) else [None]:
        if isinstance(item, str):
            patterns.setdefault("train", []).append(item)
        elif isinstance(item, dict) and isinstance(item.get("path"), str | list):
            paths = item["path"] if isinstance(item["path"], list) else [item["path"]]
            patterns.setdefault(str(item.get("split", "train")), []).extend(str(p) for p in paths)
        else:
            raise InputError(f"{root / 'README.md'}: data_files must be a pattern, a list of patterns or a list of "
                             "{split, path} mappings; fix it")
    out = {}
    for split, pats in patterns.items():
        out[split] = _match(pats, files)
        if not out[split]:
            raise InputError(f"{root / 'README.md'}: split '{split}' names {', '.join(pats)}, which match no data "
                             f"file in {root}")
    return out


def _count_rows(path: Path, ds: DatasetConfig) -> int:
    """Rows of one file (for percent and negative slices): from the metadata where the format has it."""
    fmt = file_format(path, ds)
    try:
        if fmt == "parquet":
            return pq.ParquetFile(path).metadata.num_rows
        if fmt == "arrow":
            with pa.memory_map(str(path)) as source:
                try:
                    return ipc.open_file(source).count_rows()
                except pa.ArrowInvalid:
                    source.seek(0)
                    return sum(b.num_rows for b in ipc.open_stream(source))
    except (OSError, pa.ArrowInvalid) as e:
        raise InputError(f"{path}: cannot read as {fmt}: {e}") from None
    return sum(len(batch) for batch in read_batches(path, fmt, 4096))


def select_rows(batches: Any, rows: tuple[int, int] | None) -> Any:
    """Batches of RawRow cut to the rows [start, stop) of their file (by source_row)."""
    if rows is None:
        yield from batches
        return
    start, stop = rows
    for batch in batches:
        if batch and batch[0].source_row >= stop:
            return
        kept = [r for r in batch if start <= r.source_row < stop]
        if kept:
            yield kept
