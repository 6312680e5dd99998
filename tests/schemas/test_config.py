"""The config tree: every example config validates, errors name the file, line, key and the fix (all at once),
impossible combinations fail before any data is read, and --set overrides.

    .venv/bin/python -m pytest tests/schemas/test_config.py -v
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dataprep.pipeline import _NOT_DATA
from schemas.config import TRAINER_KEYS, Config, ConfigError, config_from_dict, load_config
from schemas.overrides import OverrideError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))

# Adding a key is a decision someone reviews: update this set on purpose.
FROZEN_TOP_LEVEL_KEYS = {
    "base_model", "base_model_config", "model_type", "tokenizer_type", "tokenizer_config", "trust_remote_code",
    "special_tokens", "tokens", "chat_template", "chat_template_jinja", "chat_template_date", "datasets",
    "sequence_len", "sample_packing", "train_on_inputs", "val_set_size", "dataset_prepared_path",
    "dataset_exact_deduplication", "dataset_processes", "excess_length_strategy", "quarantine_max_fraction",
    "seed", "output_dir", "adapter", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules",
    "lora_target_linear", "load_in_4bit", "load_in_8bit", "micro_batch_size", "gradient_accumulation_steps",
    "num_epochs", "max_steps", "learning_rate", "lr_scheduler", "warmup_steps", "warmup_ratio", "optimizer",
    "weight_decay", "max_grad_norm", "bf16", "fp16", "tf32", "flash_attention", "gradient_checkpointing",
    "logging_steps", "save_steps", "eval_steps", "fsdp", "fsdp_config", "wandb_project",
    # trainer (issue 8)
    "base_model_init", "lora_modules_to_save", "cosine_min_lr_ratio", "attn_implementation", "sdp_attention",
    "cosine_constant_lr_ratio", "lr_quadratic_warmup", "adam_beta1", "adam_beta2", "adam_epsilon",
    "evals_per_epoch", "saves_per_epoch", "save_total_limit", "resume_from_checkpoint",
    "auto_resume_from_checkpoints",
    # dataset types (issue 9)
    "pretraining_dataset",
    # distributed (issue 11)
    "fsdp_version",
    # curation: filters and decontamination (issue 10)
    "filters", "decontaminate",
    # chat data (issue 9): Axolotl's top-level eot_tokens
    "eot_tokens",
    # curation (issue 10): MinHash near-dedup
    "dataset_near_deduplication",
    # QLoRA (issue 11): Axolotl's overrides of the BitsAndBytesConfig
    "bnb_config_kwargs",
    # MoE LoRA: peft's target_parameters (Axolotl's key)
    "lora_target_parameters",
    # short samples dropped (Axolotl's key)
    "min_sample_len",
    # chat template variables and chatml's default system message (Axolotl's keys)
    "chat_template_kwargs", "default_system_message",
}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_configs_validate(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.datasets
    assert path.read_text().startswith("#"), "each example starts with the command that runs it"


def test_key_set_is_frozen() -> None:
    assert set(Config.model_fields) == FROZEN_TOP_LEVEL_KEYS


def test_trainer_keys_are_the_trainer_section_and_stay_out_of_the_fingerprint() -> None:
    fields = list(Config.model_fields)
    assert set(fields[fields.index("output_dir"):]) == TRAINER_KEYS, (
        "keys after output_dir are trainer keys: add a new one to TRAINER_KEYS, or move a data key above output_dir")
    base = {"tokenizer_config": "t", "datasets": [{"path": "a", "type": "alpaca"}]}
    changed = {"output_dir": "o", "learning_rate": 1.0, "max_steps": 3, "adapter": "lora", "lora_target_linear": True,
               "base_model_init": {"model_type": "qwen2"}, "save_total_limit": 2, "evals_per_epoch": 2,
               "val_set_size": 0.1}
    data_a = {k: v for k, v in config_from_dict({**base, "val_set_size": 0.1}).model_dump().items()
              if k not in _NOT_DATA}
    data_b = {k: v for k, v in config_from_dict({**base, **changed}).model_dump().items() if k not in _NOT_DATA}
    assert data_a == data_b


def test_unknown_key_names_file_line_and_closest_key(tmp_path: Path) -> None:
    cfg = tmp_path / "my.yaml"
    cfg.write_text("base_model: ./m\ndatasets:\n  - path: a.jsonl\n    type: chat_template\n"
                   "    feild_messages: conversations\nsequnce_len: 4096\n")
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    assert e.value.problems == [
        f"{cfg}:5: unknown key 'datasets[0].feild_messages'; did you mean 'field_messages'?",
        f"{cfg}:6: unknown key 'sequnce_len'; did you mean 'sequence_len'?",
    ]


def test_a_key_given_twice_is_read_as_yaml_reads_it_and_errors_name_that_line(tmp_path: Path) -> None:
    cfg = tmp_path / "my.yaml"
    cfg.write_text("tokenizer_config: x\nsequence_len: 512\ndatasets:\n  - path: a.jsonl\n    type: alpaca\n"
                   "sequence_len: 0\n")
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    assert len(e.value.problems) == 1 and e.value.problems[0].startswith(f"{cfg}:6: sequence_len")
    cfg.write_text("tokenizer_config: x\nsequence_len: 0\ndatasets:\n  - path: a.jsonl\n    type: alpaca\n"
                   "sequence_len: 512\n")
    assert load_config(cfg).sequence_len == 512  # the last one, as yaml.safe_load (and so Axolotl) reads it


def test_cli_reports_config_errors_with_exit_code_2(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("tokenizer_config: x\ndatasets:\n  - path: a.jsonl\n    type: alpacca\n")
    run = subprocess.run([sys.executable, "-m", "dataprep", "prepare", str(cfg)], capture_output=True, text=True,
                         cwd=ROOT)
    assert run.returncode == 2
    assert f"{cfg}:4: datasets[0].type: unknown dataset type 'alpacca'; did you mean 'alpaca'?" in run.stderr


@pytest.mark.parametrize(("raw", "message"), [
    ({"chat_template": "jinja"}, "chat_template: jinja needs chat_template_jinja"),
    ({"chat_template_jinja": "{{ x }}"}, "set chat_template: jinja"),
    ({"val_set_size": 1.5}, "a fraction must be < 1"),
    ({"adapter": "qlora"}, "adapter: qlora needs load_in_4bit: true"),
    ({"warmup_steps": 10, "warmup_ratio": 0.1}, "not both"),
    ({"chat_template_date": "yesterday"}, "not an ISO date"),
    ({"datasets": [{"path": "a", "type": "alpaca", "field_messages": "m"}]}, "only apply to type: chat_template"),
    ({"datasets": [{"path": "a", "type": "chat_template", "roles": {"user": ["u"]}}]},
     "roles_to_train names ['assistant']"),
    ({"datasets": [{"path": "a", "type": "alpaca", "split": "train[:5%%]"}]}, "is not a split or slice"),
    ({"datasets": [{"path": "a", "type": {"format": "no placeholder"}}]}, "must contain {instruction}"),
    # trainer
    ({"base_model": "m", "base_model_init": {"model_type": "qwen2"}}, "set only one"),
    ({"base_model_init": {"hidden_size": 8}}, "base_model_init needs model_type"),
    ({"eval_steps": 10, "evals_per_epoch": 2, "val_set_size": 0.1}, "set eval_steps or evals_per_epoch, not both"),
    ({"save_steps": 10, "saves_per_epoch": 2}, "set save_steps or saves_per_epoch, not both"),
    ({"save_steps": 2.5}, "a fraction of the total steps must be < 1"),
    ({"adapter": "lora", "lora_target_modules": "model.(q_proj"}, "lora_target_modules 'model.(q_proj': not a regular"),
    ({"lr_scheduler": "linear", "cosine_min_lr_ratio": 0.1}, "only applies to lr_scheduler: cosine"),
    ({"flash_attention": True, "attn_implementation": "sdpa"}, "attention kernels conflict"),
    ({"adapter": "lora"}, "needs lora_target_modules"),
    ({"optimizer": "sgd"}, "adamw_torch"),
])
def test_impossible_combinations_are_errors(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        config_from_dict({"tokenizer_config": "t", "datasets": [{"path": "a", "type": "alpaca"}], **raw})
    assert any(message in p for p in e.value.problems), e.value.problems


def test_a_tokenizer_is_required() -> None:
    with pytest.raises(ConfigError, match="set base_model or tokenizer_config"):
        config_from_dict({"datasets": []})


def test_overrides(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("tokenizer_config: t\ndatasets:\n  - path: a.jsonl\n    type: alpaca\n")
    loaded = load_config(cfg, ["sequence_len=4096", "sample_packing=true", "datasets.0.path=b.jsonl",
                               "lora_target_modules=[q_proj, v_proj]", "special_tokens.pad_token=<pad>"])
    assert loaded.sequence_len == 4096 and loaded.sample_packing is True
    assert loaded.datasets[0].path == "b.jsonl" and loaded.lora_target_modules == ["q_proj", "v_proj"]
    assert loaded.special_tokens is not None and loaded.special_tokens.pad_token == "<pad>"
    with pytest.raises(OverrideError, match="expected key=value"):
        load_config(cfg, ["sequence_len"])
    with pytest.raises(OverrideError, match="not an index"):
        load_config(cfg, ["datasets.3.path=x"])
    with pytest.raises(ConfigError, match=r"\(--set sequnce_len\).*did you mean 'sequence_len'"):
        load_config(cfg, ["sequnce_len=1"])


def test_axolotl_style_config_is_accepted() -> None:
    cfg = config_from_dict({
        "base_model": "./models/llama", "model_type": "AutoModelForCausalLM", "tokenizer_type": "AutoTokenizer",
        "datasets": [{"path": "data.jsonl", "type": "chat_template", "field_messages": "conversations",
                      "message_field_role": "from", "message_field_content": "value",
                      "roles": {"user": ["human"], "assistant": ["gpt"]}, "roles_to_train": ["assistant"],
                      "train_on_eos": "turn"}],
        "chat_template": "chatml", "sequence_len": 4096, "sample_packing": True, "val_set_size": 0.02,
        "adapter": "qlora", "load_in_4bit": True, "lora_r": 32, "lora_alpha": 16, "lora_target_linear": True,
        "micro_batch_size": 2, "gradient_accumulation_steps": 4, "num_epochs": 3, "learning_rate": 2e-4,
        "bf16": "auto", "flash_attention": True, "gradient_checkpointing": True,
        "bnb_config_kwargs": {"bnb_4bit_quant_type": "nf4"},
    })
    assert cfg.datasets[0].format == "chat_template"
    assert cfg.quantization == "nf4"


@pytest.mark.parametrize(("keys", "quantization"), [
    ({"adapter": "qlora", "load_in_4bit": True}, "nf4"),
    ({"adapter": "lora", "load_in_8bit": True}, "int8"),
    ({"adapter": "lora", "load_in_4bit": True}, None),  # as in Axolotl: lora ignores load_in_4bit (train warns)
    ({"load_in_8bit": True}, None),  # a full fine-tune is never quantized
])
def test_quantization_is_read_as_axolotl_reads_it(keys: dict[str, Any], quantization: str | None) -> None:
    cfg = config_from_dict({"tokenizer_config": "t", "datasets": [{"path": "a.jsonl", "type": "alpaca"}],
                            "lora_target_linear": True, **keys})
    assert cfg.quantization == quantization


def test_fsdp_over_int8_and_qlora_take_axolotls_fsdp_settings() -> None:
    base = {"tokenizer_config": "t", "datasets": [{"path": "a.jsonl", "type": "alpaca"}], "lora_target_linear": True,
            "fsdp_version": 2}
    # as Axolotl's glm47-flash and dbrx 8-bit examples write it (tests/train/test_distributed.py trains it)
    int8 = config_from_dict({**base, "adapter": "lora", "load_in_8bit": True,
                             "fsdp_config": {"cpu_ram_efficient_loading": True}})
    assert int8.fsdp_on and int8.quantization == "int8"
    # as Axolotl's QLoRA + FSDP examples write it; over a 4-bit base every rank loads (train/distributed.py)
    assert config_from_dict({**base, "adapter": "qlora", "load_in_4bit": True,
                             "fsdp_config": {"cpu_ram_efficient_loading": True}}).fsdp_on


@pytest.mark.parametrize(("name", "use"), [("adamw_hf", "use adamw_torch"),
                                           ("paged_adamw", "use paged_adamw_32bit")])
def test_optimizers_tessera_does_not_build_name_the_closest_one(name: str, use: str) -> None:
    with pytest.raises(ConfigError, match=f"optimizer: '{name}' is not available in tessera train; {use}"):
        config_from_dict({"tokenizer_config": "t", "datasets": [{"path": "a.jsonl", "type": "alpaca"}],
                          "optimizer": name})


def test_axolotl_trainer_spellings_read_as_axolotl_reads_them() -> None:
    base = {"tokenizer_config": "t", "datasets": [{"path": "a.jsonl", "type": "alpaca"}]}
    cfg = config_from_dict({**base, "gradient_checkpointing": "offload", "lr_scheduler": "constant_with_warmup",
                            "evals_per_epoch": 0, "eval_steps": None, "val_set_size": 0,
                            "adapter": "lora", "lora_target_modules": r"model.layers.[\d]+.self_attn.(q|v)_proj",
                            "attn_implementation": "xformers"})
    assert cfg.attention == "sdpa"
    assert config_from_dict({**base, "attn_implementation": "flex_attention"}).attention == "sdpa"
    hub = config_from_dict({**base, "attn_implementation": "kernels-community/vllm-flash-attn3"})
    assert hub.attention == "flash_attention_2"
    with pytest.raises(ConfigError, match="attn_implementation"):
        config_from_dict({**base, "attn_implementation": "kernels-community/sage-attention"})
    assert cfg.gradient_checkpointing is True  # activation offloading: checkpointing without the offload
    assert cfg.lr_scheduler == "constant_with_warmup" and cfg.evals_per_epoch == 0
    assert isinstance(cfg.lora_target_modules, str)
    # eval settings without a val split: Axolotl evaluates nothing; so does tessera train (with a warning)
    assert config_from_dict({**base, "eval_steps": 5}).eval_steps == 5
