"""Dataset folders as users have them, read like `datasets` reads them (datasets itself is the reference):
local clones of Hub dataset repos (sharded data/<split>-*.parquet, README.md `configs:` with named configs and
per-split data_files, split names in file and folder names), save_to_disk() folders (Dataset and DatasetDict),
split selection (today's bug: the test split was trained), metadata files never read as rows, and split slices
(`train[:20%]`, `train[100:200]`, `train[10%:20%]`, negative bounds, `+`) selecting exactly datasets' rows.

    .venv/bin/python -m pytest tests/dataprep/test_dataset_folders.py -v
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl
import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
datasets = pytest.importorskip("datasets")  # the reference; a dev dependency only

from dataprep.hf_folders import resolve_sources  # noqa: E402
from dataprep.load import InputError, file_format  # noqa: E402
from dataprep.pipeline import Source  # noqa: E402
from schemas.config import ConfigError, DatasetConfig, config_from_dict  # noqa: E402
from schemas.splits import parse_split  # noqa: E402
from tests.conftest import Prepare, write_jsonl  # noqa: E402

SPECS = ["train", "train[:20%]", "train[100:200]", "train[10%:20%]", "train[-7:]", "train[:-3]", "train[5:]",
         "train[33%:]", "train[-50%:-10%]", "train[:1%]", "train[:50%](pct1_dropremainder)", "train[7:3]",
         "train[0:0]", "train[:100%]", "train[-100%:]", "train[2_0:3_0]"]


def rows(prefix: str, n: int) -> list[dict]:
    return [{"text": f"{prefix} row {i}", "n": i} for i in range(n)]


def selected(ds: dict, config_dir: Path) -> list[str]:
    """The texts of the rows that prepare reads for one datasets[] entry, in order."""
    cfg = DatasetConfig(type="completion", **ds)
    out = []
    for f in resolve_sources(cfg, config_dir):
        for batch in Source(0, f.path, str(f.path), file_format(f.path, cfg), f.rows).batches(7):
            out += [json.loads(r.payload)["text"] if isinstance(r.payload, bytes) else r.payload["text"]
                    for r in batch]
    return out


def reference(tmp_path: Path, *args, **kwargs) -> list[str]:
    return list(datasets.load_dataset(*args, cache_dir=str(tmp_path / "hf_cache"), **kwargs)["text"])


@pytest.mark.parametrize("n", [0, 1, 7, 99, 100, 101, 250, 1001])
def test_slice_bounds_match_datasets_read_instruction(n: int) -> None:
    for spec in SPECS:
        if "pct1" in spec and n < 100:
            with pytest.raises(ValueError, match="fewer than 100 rows"):
                parse_split(spec)[0].bounds(n)
            continue
        ours = [p.bounds(n) for p in parse_split(spec)]
        ref = [(a.from_, a.to) for a in datasets.ReadInstruction.from_spec(spec).to_absolute({"train": n})]
        assert ours == ref, (spec, n)


@pytest.mark.parametrize("spec", ["train[", "train[1:2:3]", "train[:200%]", "train[:5](closest)", "tr ain",
                                  "train[:5%](floor)"])
def test_bad_split_spec_is_a_config_error(spec: str) -> None:
    with pytest.raises(ConfigError, match="split"):
        config_from_dict({"datasets": [{"path": "x", "type": "completion", "split": spec}]})


@pytest.fixture(scope="module")
def hub_clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Hub repo as `git clone` leaves it: sharded parquet per split, README.md, .gitattributes."""
    root = tmp_path_factory.mktemp("hub") / "repo"
    (root / "data").mkdir(parents=True)
    train = rows("train", 230)
    pl.DataFrame(train[:120]).write_parquet(root / "data/train-00000-of-00002.parquet")
    pl.DataFrame(train[120:]).write_parquet(root / "data/train-00001-of-00002.parquet")
    pl.DataFrame(rows("test", 40)).write_parquet(root / "data/test-00000-of-00001.parquet")
    (root / "README.md").write_text("---\nlicense: mit\ntask_categories:\n- text-generation\n---\n# My data\n")
    (root / ".gitattributes").write_text("*.parquet filter=lfs diff=lfs merge=lfs -text\n")
    (root / ".git").mkdir()
    (root / ".git/config.json").write_text("{}")
    return root


@pytest.mark.parametrize("spec", ["train", "test", "train[:20%]", "train[100:200]", "train[10%:20%]", "train[-7:]",
                                  "test[:10%]+train[115:125]", "train[:50%](pct1_dropremainder)"])
def test_hub_clone_splits_and_slices_as_load_dataset(hub_clone: Path, tmp_path: Path, spec: str) -> None:
    assert selected({"path": str(hub_clone), "split": spec}, tmp_path) == reference(tmp_path, str(hub_clone),
                                                                                   split=spec)


def test_hub_clone_readme_configs(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    write_jsonl(root / "en/first.jsonl", rows("en-a", 30))
    write_jsonl(root / "en/holdout.jsonl", rows("en-b", 10))
    write_jsonl(root / "fr/all.jsonl", rows("fr", 12))
    (root / "README.md").write_text(
        "---\nconfigs:\n- config_name: en\n  default: true\n  data_files:\n  - split: train\n    path: en/first.jsonl\n"
        "  - split: test\n    path: en/holdout.jsonl\n- config_name: fr\n  data_files: fr/*.jsonl\n---\n# Cards\n")
    for ds, ref in [({"split": "train"}, {"split": "train"}), ({"split": "test[2:5]"}, {"split": "test[2:5]"}),
                    ({"name": "fr", "split": "train[:50%]"}, {"name": "fr", "split": "train[:50%]"})]:
        assert selected({"path": str(root), **ds}, tmp_path) == reference(tmp_path, str(root), **ref), ds
    with pytest.raises(InputError, match=r"no config 'de'.*en, fr"):
        selected({"path": str(root), "name": "de"}, tmp_path)


@pytest.mark.parametrize("layout", ["files", "folders"])
def test_split_names_in_file_and_folder_names(tmp_path: Path, layout: str) -> None:
    root = tmp_path / "repo"
    if layout == "files":
        write_jsonl(root / "my_train.jsonl", rows("train", 20))
        write_jsonl(root / "test.jsonl", rows("test", 5))
        write_jsonl(root / "dev-set.jsonl", rows("dev", 3))
    else:
        write_jsonl(root / "train/a.jsonl", rows("train-a", 6))
        write_jsonl(root / "train/b.jsonl", rows("train-b", 4))
        write_jsonl(root / "validation/v.jsonl", rows("val", 3))
    (root / "README.md").write_text("# no header\n")
    for spec in ["train", "validation", "train[25%:75%]"]:
        assert selected({"path": str(root), "split": spec}, tmp_path) == reference(tmp_path, str(root), split=spec)
    with pytest.raises(InputError, match="no split 'nope'"):
        selected({"path": str(root), "split": "nope"}, tmp_path)


def test_save_to_disk_folders(tmp_path: Path) -> None:
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(rows("train", 57)),
                               "test": datasets.Dataset.from_list(rows("test", 9))})
    dd.save_to_disk(str(tmp_path / "dict"), num_shards={"train": 3, "test": 1})  # several data-*.arrow files per split
    dd["train"].save_to_disk(str(tmp_path / "single"))
    loaded = datasets.load_from_disk(str(tmp_path / "dict"))
    assert len(list((tmp_path / "dict/train").glob("data-*.arrow"))) > 1
    for spec in ["train", "test", "train[10%:45%]", "test[-3:]"]:
        part = parse_split(spec)[0]
        absolute = datasets.ReadInstruction.from_spec(spec).to_absolute({part.split: len(loaded[part.split])})[0]
        a, b = absolute.from_, absolute.to
        assert selected({"path": str(tmp_path / "dict"), "split": spec}, tmp_path) == \
            loaded[part.split]["text"][a:b], spec
    assert selected({"path": str(tmp_path / "single")}, tmp_path) == \
        datasets.load_from_disk(str(tmp_path / "single"))["text"]


def test_prepare_reads_only_the_split_and_no_metadata(prepare: Prepare, tmp_path: Path, hub_clone: Path) -> None:
    """Before: every .json/.parquet under the folder was read, so the test split was trained silently and
    dataset_info.json/state.json became (quarantined) rows."""
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(rows("saved", 20)),
                               "test": datasets.Dataset.from_list(rows("test", 6))})
    dd.save_to_disk(str(tmp_path / "saved"))
    result = prepare({"datasets": [{"path": "saved", "type": "completion"},
                                   {"path": str(hub_clone), "type": "completion", "split": "train[10:30]"}]})
    acc = result.manifest["accounting"]
    assert acc["input_rows"] == acc["kept"] == 20 + 20
    samples = pl.read_parquet(tmp_path / "out/samples.parquet")
    hub = samples.filter(pl.col("dataset_index") == 1)
    assert hub["source_row"].to_list() == list(range(10, 30))  # row numbers within the file, not the slice
    assert set(hub["source_file"].to_list()) == {str(hub_clone / "data/train-00000-of-00002.parquet")}
    sources = result.manifest["sources"]
    assert [s.get("rows") for s in sources if s["dataset"] == str(hub_clone)] == [[10, 30]]
    again = prepare({"datasets": [{"path": "saved", "type": "completion"},
                                  {"path": str(hub_clone), "type": "completion", "split": "train[10:31]"}]})
    assert again.manifest["fingerprint"] != result.manifest["fingerprint"] and not again.cached


def test_single_files_have_only_a_train_split(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "a.jsonl", rows("a", 10))
    assert selected({"path": "a.jsonl", "split": "train[-2:]"}, tmp_path) == ["a row 8", "a row 9"]
    with pytest.raises(InputError, match=r"no split 'test'.*it has train"):
        selected({"path": "a.jsonl", "split": "test"}, tmp_path)


@pytest.mark.parametrize(("file", "edit", "message"), [
    ("dict/dataset_dict.json", {"splits": 5}, r"dataset_dict.json: `splits` must be a list of split folder names"),
    ("dict/dataset_dict.json", {"splits": ["train", "../.."]}, r"`splits` must be a list of split folder names"),
    ("dict/train/state.json", {"_data_files": 5}, r"train/state.json: lists data files that are not there \(none\)"),
])
def test_a_save_to_disk_folder_with_edited_metadata_is_a_one_line_error(tmp_path: Path, file: str, edit: dict,
                                                                        message: str) -> None:
    # `splits: 5` and `_data_files: 5` were TypeError tracebacks; a split named '../..' left the folder
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows("train", 3))}).save_to_disk(str(tmp_path / "dict"))
    meta = json.loads((tmp_path / file).read_text())
    (tmp_path / file).write_text(json.dumps({**meta, **edit}))
    with pytest.raises(InputError, match=message):
        selected({"path": str(tmp_path / "dict")}, tmp_path)
