"""Axolotl's keys (schemas/axolotl_keys.py, schemas/axolotl_compat.py): the corpus of Axolotl-shaped configs
validates, each classification behaves (renamed, not used, not supported, empty = unset), hints come from the
same section and only when close, `prepare --explain` and the "not used" note.

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/schemas/test_axolotl_keys.py -v
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import Field

from schemas.axolotl_compat import TOP_KEYS, known_keys, normalise
from schemas.axolotl_keys import NOT_SUPPORTED, SECTION_KEYS, TOP_FAMILIES
from schemas.config import (
    TRAINER_KEYS,
    Config,
    ConfigError,
    DatasetConfig,
    config_from_dict,
    ignored_keys_warning,
    key_report,
    load_config,
    unused_keys_note,
)

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).parent / "axolotl_corpus"
BASE = {"tokenizer_config": "t", "datasets": [{"path": "a.jsonl", "type": "alpaca"}]}


def _problems(raw: dict) -> list[str]:
    with pytest.raises(ConfigError) as e:
        config_from_dict(raw)
    return e.value.problems


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.yaml")), ids=lambda p: p.name)
def test_corpus_config_validates(path: Path) -> None:
    assert path.read_text().startswith("# tessera prepare "), "each config starts with the command that runs it"
    cfg = load_config(path)
    assert cfg.datasets and all((path.parent / ds.path).exists() for ds in cfg.datasets)


@pytest.mark.parametrize("path", sorted((CORPUS / "rejected").glob("*.yaml")), ids=lambda p: p.name)
def test_rejected_corpus_config_says_what_tessera_does_instead(path: Path) -> None:
    expected = re.search(r"^# expect-error: (.+)$", path.read_text(), re.M)
    assert expected, "each rejected config names its error"
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert any(re.match(rf"{re.escape(str(path))}:\d+: ", p) and expected[1] in p for p in e.value.problems), \
        e.value.problems


def test_corpus_covers_every_key_family() -> None:
    used: set[str] = set()
    for path in CORPUS.glob("*.yaml"):
        used |= set(yaml.safe_load(path.read_text()))
    families = {f for f, keys in TOP_FAMILIES.items() if used & set(keys)}
    assert families >= set(TOP_FAMILIES) - {"rl", "reward_model", "multimodal"}, set(TOP_FAMILIES) - families


def test_registry_is_consistent() -> None:
    seen: dict[str, str] = {}
    for family, keys in TOP_FAMILIES.items():
        for k in keys:
            assert k not in seen, f"{k} is in {seen.get(k)} and {family}"
            seen[k] = family
    for section, key in NOT_SUPPORTED:
        assert key in known_keys(section), f"{section}.{key} is not supported but not an Axolotl key"
    # A top-level field Axolotl does not have is Tessera's own (its docstring says so), or a misspelt Axolotl key
    tessera_only = {"chat_template_date", "quarantine_max_fraction", "base_model_init",
                    "dataset_near_deduplication", "filters", "decontaminate"}
    assert set(Config.model_fields) - TOP_KEYS == tessera_only, \
        "a new top-level field is not an Axolotl key: check its spelling, or add it to tessera_only here"
    assert {"path", "type", "field_messages", "roles_to_train"} <= set(SECTION_KEYS["datasets"])


# ---- renamed: both spellings accepted, read as one field, a conflict is an error


@pytest.mark.parametrize(("given", "check"), [
    ({"dataset_num_proc": 3}, lambda c: c.dataset_processes == 3),
    ({"type_of_model": "AutoModelForCausalLM"}, lambda c: c.model_type == "AutoModelForCausalLM"),  # field name
    ({"eager_attention": True}, lambda c: c.attn_implementation == "eager"),
    ({"eager_attention": False}, lambda c: c.attn_implementation is None),
    ({"datasets": [{"path": "a", "type": "chat_template",
                    "message_property_mappings": {"role": "from", "content": "value"}}]},
     lambda c: (c.datasets[0].message_field_role, c.datasets[0].message_field_content) == ("from", "value")),
    ({"fsdp_config": {"offload_params": True, "version": 2}},
     lambda c: c.fsdp_config.offload_params is True and c.fsdp_config.fsdp_version == 2),
    ({"fsdp_config": {"fsdp_offload_params": True}}, lambda c: c.fsdp_config.offload_params is True),
    ({"fsdp_version": 2, "fsdp_config": {"fsdp_offload_params": True}},
     lambda c: c.fsdp_version == 2 and c.fsdp_config.offload_params is True),
])
def test_renamed_keys_are_read_as_tessera_fields(given: dict, check) -> None:
    cfg = config_from_dict({**BASE, **given})
    assert check(cfg)


@pytest.mark.parametrize(("given", "message"), [
    ({"dataset_num_proc": 2, "dataset_processes": 4},
     "dataset_num_proc: 2 and dataset_processes: 4 are two spellings of one setting"),
    ({"eager_attention": True, "attn_implementation": "sdpa"},
     "eager_attention: 'eager' and attn_implementation: 'sdpa' are two spellings"),
    ({"datasets": [{"path": "a", "type": "chat_template", "message_field_role": "role",
                    "message_property_mappings": {"role": "from"}}]},
     "datasets[0].message_property_mappings.role: 'from' and datasets[0].message_field_role: 'role'"),
    ({"fsdp_config": {"offload_params": True, "fsdp_offload_params": False}},
     "fsdp_config.fsdp_offload_params: False and fsdp_config.offload_params: True"),
    ({"datasets": [{"path": "a", "type": "chat_template", "message_property_mappings": {"colour": "c"}}]},
     "datasets[0].message_property_mappings.colour: Tessera maps the message properties content, role"),
])
def test_two_spellings_with_different_values_are_an_error(given: dict, message: str) -> None:
    assert any(message in p for p in _problems({**BASE, **given})), _problems({**BASE, **given})


def test_same_value_in_both_spellings_is_fine() -> None:
    assert config_from_dict({**BASE, "dataset_num_proc": 2, "dataset_processes": 2}).dataset_processes == 2


def test_renamed_value_errors_name_the_key_as_written(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("tokenizer_config: t\ndatasets:\n  - path: a.jsonl\n    type: alpaca\ndataset_num_proc: 0\n")
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    assert e.value.problems == [f"{cfg}:5: dataset_num_proc (read as dataset_processes): Input should be greater "
                                "than or equal to 1"]


# ---- not supported: an error that says what Tessera does instead; switched off it is fine


@pytest.mark.parametrize(("given", "message"), [
    ({"rl": "dpo"}, "rl: preference training (DPO, IPO, ORPO, KTO, SimPO, GRPO, EBFT) is not available yet"),
    ({"rl": "grpo"}, "remove `rl` to train SFT"),
    ({"reward_model": True}, "reward_model: reward-model training"),
    ({"processor_type": "AutoProcessor"}, "processor_type: multimodal (image/audio) training is not available"),
    ({"streaming": True}, "streaming: Tessera reads local files only"),
    ({"test_datasets": [{"path": "b", "type": "alpaca"}]}, "test_datasets: Tessera makes the evaluation split"),
    ({"dataset_shard_num": 4, "dataset_shard_idx": 1}, "split: train[0%:25%]"),
    ({"special_tokens": {"additional_special_tokens": ["<x>"]}}, "add them with the top-level `tokens:`"),
    ({"datasets": [{"path": "a", "type": "alpaca", "shards": 2}]}, "datasets[0].shards: Tessera reads whole"),
    ({"datasets": [{"path": "a", "type": "alpaca", "field_chosen": "c"}]}, "datasets[0].field_chosen: preference"),
    ({"datasets": [{"path": "a", "type": {"field_prompt": "p"}}]}, "datasets[0].type.field_prompt: preference"),
])
def test_not_supported_keys_say_what_tessera_does_instead(given: dict, message: str) -> None:
    problems = _problems({**BASE, **given})
    assert any(message in p for p in problems), problems


@pytest.mark.parametrize(("plugins", "message"), [
    (["axolotl.integrations.kd.KDPlugin"], "plugins[0]: axolotl.integrations.kd.KDPlugin: knowledge distillation"),
    (["axolotl.integrations.liger.LigerPlugin", "axolotl.integrations.spectrum.SpectrumPlugin"],
     "plugins[1]: axolotl.integrations.spectrum.SpectrumPlugin: Spectrum"),
    ("axolotl.integrations.diffusion.DiffusionPlugin", "plugins: axolotl.integrations.diffusion.DiffusionPlugin"),
])
def test_plugins_that_change_training_are_errors(plugins: object, message: str) -> None:
    problems = _problems({**BASE, "plugins": plugins})
    assert len(problems) == 1 and message in problems[0] and "remove it from plugins" in problems[0], problems


def test_plugins_that_leave_the_model_the_same_are_not_used() -> None:
    # kernels, logging, parallelism and a plugin of the user's own: the trained model is the same without them
    plugins = ["axolotl.integrations.liger.LigerPlugin", "axolotl.integrations.cut_cross_entropy.CutCrossEntropyPlugin",
               "axolotl.integrations.swanlab.SwanLabPlugin", "my_project.plugins.Logging"]
    cfg = config_from_dict({**BASE, "plugins": plugins, "liger_rope": True})
    assert {"plugins", "liger_rope"} <= set(key_report(cfg).not_used)


@pytest.mark.parametrize("off", [None, False, "", [], {}])
def test_not_supported_features_switched_off_are_accepted(off: object) -> None:
    cfg = config_from_dict({**BASE, "rl": off, "streaming": off, "test_datasets": off, "processor_type": off})
    assert "rl" not in key_report(cfg).not_used


def test_a_key_becomes_supported_when_its_field_exists() -> None:
    """Support is computed from the tree: a field another change adds stops being 'not available yet'."""

    class WithTemplate(DatasetConfig):
        field_human: str | None = None

    class Tree(Config):
        datasets: list[WithTemplate] = Field(default_factory=list)  # type: ignore[assignment]

    def raw() -> dict:
        return {"datasets": [{"path": "a", "type": "chat_template", "field_human": "human"}]}

    assert [loc for loc, _ in normalise(raw(), Config).problems] == [("datasets", 0, "field_human")]
    done, given = normalise(r := raw(), Tree), r
    assert not done.problems and given["datasets"][0]["field_human"] == "human"


def test_chat_template_kwargs_and_default_system_message_are_fields() -> None:
    """Both were "not available yet"; now fields, read as Axolotl reads them (tests/dataprep/test_template_kwargs)."""
    assert not {("", "chat_template_kwargs"), ("", "default_system_message")} & set(NOT_SUPPORTED)
    cfg = config_from_dict({**BASE, "chat_template": "chatml", "chat_template_kwargs": {"enable_thinking": False},
                            "default_system_message": "You are terse."})
    assert cfg.chat_template_kwargs == {"enable_thinking": False} and cfg.default_system_message == "You are terse."
    assert not {"chat_template_kwargs", "default_system_message"} & set(key_report(cfg).not_used)


# ---- accepted, not used: any value, never an error, one note line


def test_not_used_keys_take_any_value_and_are_listed_once() -> None:
    cfg = config_from_dict({**BASE, "wandb_entity": {"any": ["value"]}, "hub_model_id": 3, "plugins": ["x.Y"],
                            "deepspeed": "zero3.json", "wandb_name": None, "learning_rate": 1e-4,
                            "fsdp_config": {"fsdp_sharding_strategy": "FULL_SHARD"},
                            "datasets": [{"path": "a", "type": "alpaca", "revision": "main"}]})
    assert sorted(key_report(cfg).not_used) == ["datasets[0].revision", "deepspeed",
                                                "fsdp_config.fsdp_sharding_strategy", "hub_model_id", "plugins",
                                                "wandb_entity"]
    prepare = unused_keys_note(cfg, "prepare")
    train = unused_keys_note(cfg, "train")
    assert prepare is not None and prepare.startswith("not used by tessera prepare: ")
    assert prepare == ("not used by tessera prepare: datasets[0].revision, wandb_entity, hub_model_id, plugins, "
                       "deepspeed, learning_rate, fsdp_config (7 keys: 5 Tessera does not implement, 2 read by "
                       "tessera train; `tessera prepare --explain` lists them)"), prepare
    assert train is not None and "learning_rate" not in train and "fsdp_config," not in train
    assert "wandb_name" not in prepare, "an empty key is unset, not 'not used'"
    assert unused_keys_note(config_from_dict(BASE), "train") is None


def test_trainer_keys_are_never_not_used_for_train() -> None:
    cfg = config_from_dict({**BASE, "output_dir": "o", "learning_rate": 1e-4, "lora_r": 4, "wandb_project": "p",
                            "save_total_limit": 2, "attn_implementation": "sdpa"})
    assert set(cfg.model_fields_set) - {"tokenizer_config", "datasets"} <= TRAINER_KEYS
    assert unused_keys_note(cfg, "train") is None
    assert "(6 keys; " in (unused_keys_note(cfg, "prepare") or "")


# ---- empty means unset, at every level


def test_empty_values_mean_the_default_everywhere() -> None:
    cfg = config_from_dict({
        "tokenizer_config": "t", "sequence_len": None, "seed": None, "sample_packing": None, "val_set_size": None,
        "dataset_exact_deduplication": None, "chat_template": None, "bf16": None, "lora_r": None,
        "special_tokens": {"pad_token": None}, "fsdp_config": {"fsdp_offload_params": None, "fsdp_version": None},
        "datasets": [{"path": "a", "type": "chat_template", "split": None, "roles_to_train": None,
                      "train_on_eos": None, "field_messages": None}],
    })
    default = Config.model_construct()
    assert (cfg.sequence_len, cfg.seed, cfg.sample_packing, cfg.val_set_size) == (2048, 42, False, 0.0)
    assert cfg.dataset_exact_deduplication is True and cfg.chat_template == default.chat_template == "tokenizer_default"
    assert cfg.bf16 == "auto" and cfg.lora_r == 8
    assert cfg.special_tokens is not None and cfg.special_tokens.pad_token is None
    assert cfg.fsdp_config is not None and cfg.fsdp_config.offload_params is False
    ds = cfg.datasets[0]
    assert (ds.split, ds.roles_to_train, ds.train_on_eos, ds.field_messages) == ("train", ["assistant"], "turn", None)


def test_an_empty_unknown_key_is_still_an_error() -> None:
    assert _problems({**BASE, "sequnce_len": None}) == ["<dict>: unknown key 'sequnce_len'; did you mean "
                                                        "'sequence_len'?"]


def test_existing_configs_read_exactly_as_before() -> None:
    """No Axolotl-only key, no empty value: the pass changes nothing, so prepared bytes cannot change."""
    for path in ROOT.glob("examples/*.yaml"):
        raw = yaml.safe_load(path.read_text())
        assert load_config(path).model_dump() == Config.model_validate(raw).model_dump()
        assert not key_report(load_config(path)).entries


# ---- unknown keys: a hint from the same section that means something close, or none


@pytest.mark.parametrize(("raw", "hint"), [
    ({"max_seq_length": 4096}, "did you mean 'sequence_len'?"),  # TRL's name
    ({"num_train_epochs": 3}, "did you mean 'num_epochs'?"),  # transformers' name
    ({"Learning-Rate": 1e-4}, "did you mean 'learning_rate'?"),
    ({"resume_checkpoint": "c"}, "did you mean 'resume_from_checkpoint'?"),
    ({"wandb_projct": "p"}, "did you mean 'wandb_project'?"),
    ({"datasets": [{"path": "a", "type": "chat_template", "feild_messages": "m"}]}, "did you mean 'field_messages'?"),
    ({"datasets": [{"path": "a", "type": "alpaca", "spilt": "train"}]}, "did you mean 'split'?"),
    ({"special_tokens": {"pad_tokn": "x"}}, "did you mean 'pad_token'?"),
])
def test_unknown_keys_get_a_close_hint(raw: dict, hint: str) -> None:
    problems = _problems({**BASE, **raw})
    assert len(problems) == 1 and problems[0].endswith(hint), problems


@pytest.mark.parametrize(("raw", "never"), [
    ({"checkpoint": "c"}, "gradient_checkpointing"),
    ({"resume": "c"}, "gradient_checkpointing"),
    ({"save_model": True}, "save_only_model"),
    ({"base_model_path": "m"}, "base_model_init"),
    ({"flash_attn": True}, "flash_attn_d512"),
    ({"field_mesages": "m"}, "field_messages"),  # a dataset key at the top level
    ({"datasets": [{"path": "a", "type": "alpaca", "sequnce_len": 9}]}, "sequence_len"),  # a top key in a dataset
    ({"datasets": [{"path": "a", "type": "alpaca", "learning_rat": 1}]}, "learning_rate"),
])
def test_no_hint_from_another_section_or_another_meaning(raw: dict, never: str) -> None:
    """Never a wrong hint: either an error with another hint, or (no close key in the section) ignored."""
    try:
        cfg = config_from_dict({**BASE, **raw})
    except ConfigError as e:
        assert not any(f"'{never}'" in p for p in e.problems), e.problems
    else:
        assert key_report(cfg).ignored and never not in key_report(cfg).ignored


def test_keys_no_one_has_are_ignored_as_axolotl_ignores_them(tmp_path: Path) -> None:
    """Axolotl ignores keys it does not have (pydantic's default), so a config that runs there validates here:
    such a key is ignored and named in a warning, unless it looks misspelt (a close key of the section) or is a
    key of another section. (Axolotl's own examples/llama-3/lora-1b-sample-packing-sequentially.yml has
    `test_value: true`.)"""
    cfg = config_from_dict({**BASE, "test_value": True, "my_notes": None,
                            "datasets": [{"path": "a.jsonl", "type": "alpaca", "comment": "v2 data"}]})
    assert sorted(key_report(cfg).ignored) == ["datasets[0].comment", "my_notes", "test_value"]
    assert cfg.model_dump() == config_from_dict(BASE).model_dump()
    assert ignored_keys_warning(cfg) == ("ignored: datasets[0].comment, test_value, my_notes (neither Axolotl "
                                         "0.21.0 nor Tessera has these keys, and Axolotl ignores them too; check "
                                         "their spelling)")
    assert ignored_keys_warning(config_from_dict(BASE)) is None
    # misplaced (a key of another section) or misspelt (close to a key of this section): errors, as before
    for raw, message in (({"datasets": [{"path": "a", "type": "alpaca", "learning_rate": 1e-4}]},
                          "unknown key 'datasets[0].learning_rate'; learning_rate is a top-level key: write it "
                          "at the top level of the config, not inside datasets[0]"),
                         ({"field_messages": "conversations"},
                          "field_messages is a key of each datasets[] entry: write it in the dataset it is for"),
                         ({"micro_batch_sise": 2}, "did you mean 'micro_batch_size'?"),
                         ({"dataset_near_deduplication": {"bands": 4}},  # a section only Tessera has
                          "unknown key 'dataset_near_deduplication.bands'")):
        assert any(message in p for p in _problems({**BASE, **raw}))
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**BASE, "datasets": [{"path": str(tmp_path / "a.jsonl"), "type": "alpaca"}],
                                    "test_value": True}))
    (tmp_path / "a.jsonl").write_text('{"instruction": "a", "output": "b"}\n')
    run = subprocess.run([sys.executable, "-m", "dataprep", "prepare", str(path), "--explain"], capture_output=True,
                         text=True, cwd=ROOT)
    assert run.returncode == 0 and "(ignored)" in run.stdout and "test_value" in run.stdout, run.stdout + run.stderr


# ---- the CLI: --explain reads no data; prepare prints the note once


def test_explain_lists_the_differences_with_their_keys(tmp_path: Path) -> None:
    cfg = tmp_path / "ax.yaml"
    cfg.write_text("base_model: ./nowhere\nchat_template: llama3_1\nsample_packing: true\nval_set_size: 0.1\n"
                   "datasets:\n  - path: missing.jsonl\n    type: chat_template\n    message_property_mappings:\n"
                   "      role: from\n      content: value\ndataset_num_proc: 2\nwandb_entity: me\n"
                   "learning_rate: 1e-4\n")
    run = subprocess.run([sys.executable, "-m", "dataprep", "prepare", "--explain", str(cfg)], capture_output=True,
                         text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    keys = [line.split(":")[0].strip() for line in run.stdout.splitlines()[1:]]
    assert {"dataset_exact_deduplication", "chat_template", "excess_length_strategy", "sample_packing",
            "val_set_size", "dataset_num_proc", "datasets[0].message_property_mappings.role", "(trainer keys)",
            "(not used)"} <= set(keys), run.stdout
    assert "chat_template: llama3_1 is not an Axolotl template name" in run.stdout
    assert "(not used): accepted and not used by tessera prepare or train (Axolotl trainer, infrastructure and " \
           "logging keys): wandb_entity" in run.stdout
    assert not (tmp_path / "prepared").exists()


def test_prepare_prints_the_not_used_note_once(tmp_path: Path) -> None:
    # custom field names (question/answer) also check that the setup probe uses the dataset's own mapping
    src = CORPUS / "custom_instruct.yaml"
    run = subprocess.run([sys.executable, "-m", "dataprep", "prepare", str(src), "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    notes = [line for line in run.stdout.splitlines() if "not used by tessera" in line]
    assert len(notes) == 1, run.stdout
    assert notes[0].startswith("note: not used by tessera prepare: eval_sample_packing, pad_to_sequence_len, "
                               "output_dir, adapter, lora_r, lora_alpha, lora_dropout, lora_target_linear, "), notes
    assert notes[0].endswith(" (23 keys: 2 Tessera does not implement, 21 read by tessera train; `tessera prepare "
                             "--explain` lists them)"), notes


# ---- trainer values tessera train would reject: warnings for prepare, errors for train


def test_prepare_warns_about_trainer_values_that_train_rejects(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("tokenizer_config: t\ndatasets:\n  - path: a.jsonl\n    type: alpaca\noptimizer: adafactor\n"
                   "eval_steps: 10\nlearning_rate: 1e-4\n")
    warnings: list[str] = []
    loaded = load_config(cfg, warnings=warnings, for_prepare=True)
    assert loaded.datasets[0].type == "alpaca"
    assert warnings == [
        f"{cfg}:5: optimizer: Input should be 'adamw_torch', 'adamw_torch_fused', 'adamw_bnb_8bit', 'adamw_8bit', "
        "'paged_adamw_8bit', 'paged_adamw_32bit', 'adamw_torch_8bit', 'adamw_torch_4bit', 'ao_adamw_fp8' or 'muon' "
        "(tessera prepare does not use this trainer setting and goes on; tessera train will stop on it)",
    ]
    with pytest.raises(ConfigError, match="optimizer: Input should be"):
        load_config(cfg)  # as tessera train reads it


def test_prepare_goes_on_past_cross_field_trainer_problems(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("tokenizer_config: t\ndatasets:\n  - path: a.jsonl\n    type: alpaca\nsave_steps: 10\n"
                   "saves_per_epoch: 2\n")
    warnings: list[str] = []
    load_config(cfg, warnings=warnings, for_prepare=True)
    assert len(warnings) == 1 and "set save_steps or saves_per_epoch, not both" in warnings[0]


@pytest.mark.parametrize("data_problem", ["sequence_len: -1\n", "rl: dpo\n", "sequnce_len: 9\n"])
def test_data_problems_stay_errors_for_prepare(tmp_path: Path, data_problem: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("tokenizer_config: t\ndatasets:\n  - path: a.jsonl\n    type: alpaca\noptimizer: sgd\n"
                   + data_problem)
    with pytest.raises(ConfigError) as e:
        load_config(cfg, warnings=[], for_prepare=True)
    assert any(":6: " in p for p in e.value.problems), e.value.problems
