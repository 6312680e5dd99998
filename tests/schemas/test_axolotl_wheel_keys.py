"""Every key of the pinned Axolotl 0.21.0 wheel's config schema is known to Tessera (schemas/axolotl_keys.py or a
field of Tessera's own), section by section, plugin arguments included; and the keys the wheel added since commit
067b021c are read as classified: not used (any value), supported, or an error that says what Tessera does instead.

The reference is the wheel itself (tests/axolotl_schema.py reads its pydantic models), not a copied list: after
an Axolotl bump, test_every_axolotl_key_is_known_to_tessera names each new key. Skipped only when the wheel cannot
be fetched (no PyPI and no cached copy).

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/schemas/test_axolotl_wheel_keys.py -v
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from schemas.axolotl_compat import known_keys, submodel
from schemas.axolotl_keys import NOT_SUPPORTED, SECTION_KEYS
from schemas.config import Config, ConfigError, config_from_dict, key_report
from tests.axolotl_reference import package_dir
from tests.axolotl_schema import schema_keys

SECTIONS = ["", *SECTION_KEYS]
BASE = {"tokenizer_config": "t", "datasets": [{"path": "a.jsonl", "type": "alpaca"}]}


@pytest.fixture(scope="module")
def wheel() -> dict[str, Any]:
    try:
        root = package_dir()
    except (RuntimeError, OSError) as e:  # fetch_axolotl's download failed: no PyPI here and no cached wheel
        pytest.skip(f"the pinned Axolotl wheel could not be fetched: {e}")
    return schema_keys(root, SECTIONS)


def _tessera_fields(section: str) -> set[str]:
    model: type[BaseModel] | None = Config
    for part in section.split(".") if section else []:
        model = submodel(model, part) if model is not None and part in model.model_fields else None
    return set(model.model_fields) if model is not None else set()


@pytest.mark.parametrize("section", SECTIONS, ids=lambda s: s or "top level")
def test_every_axolotl_key_is_known_to_tessera(wheel: dict[str, Any], section: str) -> None:
    keys = wheel["sections"][section]
    assert keys is not None, f"Axolotl 0.21.0 has no section {section!r}: remove it from SECTION_KEYS"
    unknown = sorted(set(keys) - known_keys(section) - _tessera_fields(section))
    assert not unknown, (f"Axolotl 0.21.0 has keys in {section or 'the top level'} that Tessera rejects as unknown: "
                         f"{unknown}; classify each in schemas/axolotl_keys.py by what its description in the "
                         "wheel says it does")


def test_plugin_arguments_are_top_level_keys(wheel: dict[str, Any]) -> None:
    plugins = wheel["plugins"]
    # a scan that found no plugin would make the top-level check blind to their keys
    assert "axolotl.integrations.liger.LigerArgs" in plugins and len(plugins) >= 15, sorted(plugins)
    for path, keys in plugins.items():
        assert set(keys) <= known_keys(""), (path, sorted(set(keys) - known_keys("")))


# ---- the keys Axolotl 0.21.0 added, each with a typical value (their descriptions and defaults in the wheel)

NOT_USED = {
    "eval_on_start": False, "full_determinism": True, "logging_nan_inf_filter": False, "use_dft": False,
    "lora_fp32_gradients": True, "torch_compile_regional": True, "fp8_config": {"recipe": "rowwise"},
    "balance_labels": True, "label_balance_window_optim_steps": 4, "nf4_backend": "torchao", "dpo_ld_alpha": 0.5,
    "fa_varlen_kwargs_in_collator": False, "sync_profiler_start_step": 2, "sync_profiler_steps": 3,
    "ple_cpu_offload": True, "mixlora_num_experts": 8, "mixlora_top_k": 2, "mixlora_router_aux_loss_coef": 0.01,
    "mixlora_router_init_range": 0.02, "mixlora_jitter_noise": 0.0, "mixlora_expert_lora_r": 16,
    "mixlora_expert_lora_alpha": 32, "mixlora_expert_lora_dropout": 0.05,
    "export": {"format": "gguf", "outtype": "q8_0", "quantize": ["q4_k_m"]},
    # plugin arguments
    "liger_kernel_impl": "cutile", "cut_cross_entropy_c_grad_chunk_size": "auto",
    "cut_cross_entropy_accum_c_fp32": True, "expert_parallel_dispatch_chunks": 2,
    "expert_parallel_save_dispatch": True, "autotune_cache_path": "autotune.json", "autotune_neighborhood": 2,
    "autotune_profiles": [{"kernel": "_scatter2scatter_lora", "configs": [{"BLOCK_M": 128, "num_warps": 4}]}],
    "context_parallel": {"size": 2, "backend": "ulysses"},
    "coreweave": {"deployment_id": "d", "bucket": "b", "path_prefix": "p", "gateway_url": "g", "model": "m"},
    "diffusion_decision": {"answer_format": "lines"},
}


def test_new_trainer_and_infrastructure_keys_are_accepted_and_not_used() -> None:
    cfg = config_from_dict({**BASE, **NOT_USED})
    report = key_report(cfg)
    off = {e.key for e in report.entries if e.kind == "off"}
    assert set(report.not_used) | off == set(NOT_USED), set(NOT_USED) ^ (set(report.not_used) | off)
    assert off == {"use_dft"}, "use_dft: false is DFT switched off, the same as Tessera"
    assert cfg.model_dump() == config_from_dict(BASE).model_dump(), "not used means not read"


def test_axolotl_dataset_weight_is_tessera_weight() -> None:
    cfg = config_from_dict({**BASE, "datasets": [{"path": "a.jsonl", "type": "alpaca", "weight": 0.5}]})
    assert cfg.datasets[0].weight == 0.5 and not key_report(cfg).entries


def test_sft_keys_in_a_pretraining_entry_are_not_used() -> None:
    """Axolotl's schema takes an SFTDataset in pretraining_dataset, and its loader reads none of these keys."""
    cfg = config_from_dict({"tokenizer_config": "t", "pretraining_dataset": [
        {"path": "c4.jsonl", "type": "pretrain", "chat_template": "chatml", "roles_to_train": ["assistant"],
         "shards": 4, "revision": "main"}]})
    assert cfg.datasets[0].type == "pretrain"
    assert sorted(key_report(cfg).not_used) == [f"pretraining_dataset[0].{k}" for k in
                                                ("chat_template", "revision", "roles_to_train", "shards")]


@pytest.mark.parametrize(("given", "message"), [
    ({"use_dft": True}, "use_dft: the DFT loss (each token's cross-entropy weighted by its own probability) is not "
                        "available: Tessera trains plain cross-entropy over the trained tokens; remove use_dft"),
    ({"diffusion_lm": {"noise_schedule": "cosine"}}, "diffusion_lm: diffusion language-model training is not "
                                                     "available: Tessera trains causal LMs on next-token prediction"),
    ({"diffusion_lm": {}}, "diffusion_lm: diffusion language-model training"),  # on, with Axolotl's defaults
    ({"datasets": [{"path": "synthetic", "type": "alpaca", "min_turns": 2, "max_turns": 4}]},
     "datasets[0].min_turns: synthetic datasets are not available: give a local file as `path`"),
])
def test_new_keys_that_change_what_is_trained_say_what_tessera_does_instead(given: dict, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        config_from_dict({**BASE, **given})
    assert any(message in p for p in e.value.problems), e.value.problems


def test_switched_off_they_are_accepted() -> None:
    cfg = config_from_dict({**BASE, "use_dft": None, "diffusion_lm": None,
                            "datasets": [{"path": "a.jsonl", "type": "alpaca", "input_fraction": 0}]})
    assert cfg.datasets[0].path == "a.jsonl"
    assert ("", "use_dft") in NOT_SUPPORTED and ("datasets", "input_fraction") in NOT_SUPPORTED
