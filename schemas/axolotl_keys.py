"""Axolotl's config keys, as data: what each section of an Axolotl config may hold, and what Tessera does with it.

Source: the pydantic models of the pinned Axolotl 0.21.0 wheel (dataprep/fetch_axolotl.py, sha256
5db0468897d1f3a80fa2becc80dd4409f378ce887dcb2c98854dc70b38196391), read field by field from
`axolotl/utils/schemas/` (config.py's AxolotlInputConfig and its base classes: model.py, peft.py, training.py,
integrations.py, multimodal.py, deprecated.py; datasets.py's SFTDataset, DPODataset, KTODataset,
StepwiseSupervisedDataset, SyntheticDataset, PretrainingDataset and the custom `type:` mappings; fsdp.py;
SpecialTokensConfig), the Args model each plugin in `axolotl/integrations/` names in `get_input_args` (merged
into the top level when `plugins:` lists it), and the deprecation validators (which spelling Axolotl moved to
which). First read from the repository at commit 067b021c (2026-07-24); the wheel has all of its keys but the
old top-level `fsdp` and the old `fsdp_config` spellings, kept below for the configs that carry them. Aliases
are listed as users write them (`model_config`, not `overrides_of_model_config`).
tests/schemas/test_axolotl_wheel_keys.py checks every key of the wheel against these lists, so that an Axolotl
bump names what is new.

Only facts about Axolotl live here. Which keys Tessera supports is not listed: it is computed from the pydantic
tree in schemas/config.py (schemas/axolotl_compat.py), so a field another change adds is supported as soon as it
exists. What is left over is one of:

- NOT_SUPPORTED: keys that change which rows, tokens or objective are trained, or need something Tessera does
  not do (preference training, images, the Hub). Set to anything but empty/false they are an error whose message
  says what Tessera does instead. Keys whose field Tessera is adding (`PENDING`) are errors until it exists.
- everything else Axolotl has: accepted with any value and not used (trainer, infrastructure, logging,
  kernels), listed once in the run's summary.
"""

from __future__ import annotations


def _keys(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# ---- top level, by family (the family names are what bench/axolotl_configs.py reports by)
TOP_FAMILIES: dict[str, tuple[str, ...]] = {
    # model_config, model_kwargs, model_type, model_revision are aliases Axolotl also accepts under their field
    # names (populate_by_name): overrides_of_model_config, overrides_of_model_kwargs, type_of_model,
    # revision_of_model
    "model": _keys("""base_model base_model_config cls_model_config model_type model_revision model_config
        model_kwargs overrides_of_model_config overrides_of_model_kwargs type_of_model revision_of_model
        trust_remote_code experimental_skip_move_to_device use_kernels model_quantization_config
        model_quantization_config_kwargs use_onebitllms reinit_weights trainer_cls resize_token_embeddings_to_32x
        mean_resizing_embeddings shrink_embeddings embeddings_skip_upcast low_cpu_mem_usage max_memory
        gpu_memory_limit device device_map unfrozen_parameters freeze_mm_modules is_falcon_derived_model
        is_llama_derived_model is_mistral_derived_model is_qwen_derived_model llama4_linearized_experts
        experts_implementation quantize_moe_experts ple_cpu_offload"""),
    "tokenizer": _keys("""tokenizer_config tokenizer_use_fast tokenizer_legacy tokenizer_use_mistral_common
        tokenizer_type tokenizer_save_jinja_files special_tokens tokens added_tokens_overrides fix_untrained_tokens"""),
    "chat_template": _keys("chat_template chat_template_jinja chat_template_kwargs eot_tokens default_system_message"),
    "data": _keys("""datasets test_datasets pretraining_dataset shuffle_merged_datasets shuffle_before_merging_datasets
        dataset_prepared_path dataset_shard_num dataset_shard_idx skip_prepare_dataset num_dataset_shards_to_save
        dataset_processes dataset_num_proc dataset_exact_deduplication dataset_keep_in_memory push_dataset_to_hub
        hf_use_auth_token val_set_size sequence_len excess_length_strategy eval_sequence_len min_sample_len
        max_prompt_len streaming train_on_inputs seed is_preprocess preprocess_iterable total_num_tokens
        total_supervised_tokens axolotl_config_path"""),
    "packing": _keys("""sample_packing sample_packing_group_size sample_packing_bin_size sample_packing_sequentially
        sample_packing_mp_start_method sample_packing_eff_est eval_sample_packing pad_to_sequence_len
        pad_to_multiple_of curriculum_sampling multipack_real_batches batch_flattening use_pose
        pose_split_on_token_ids pose_max_context_len pose_num_chunks pretrain_multipack_buffer_size
        pretrain_multipack_attn pretraining_sample_concatenation streaming_multipack_buffer_size group_by_length
        balance_labels label_balance_window_optim_steps"""),
    "lora": _keys("""adapter lora_model_dir lora_r lora_alpha lora_fan_in_fan_out lora_target_modules
        lora_target_parameters lora_target_linear lora_modules_to_save lora_rank_pattern lora_alpha_pattern
        lora_dropout peft_layers_to_transform peft_layers_pattern peft peft_use_dora peft_use_rslora
        peft_layer_replication peft_init_lora_weights peft_trainable_token_indices peft_ensure_weight_tying
        peft_autocast_adapter_dtype lora_on_cpu loraplus_lr_ratio loraplus_lr_embedding merge_lora merge_method
        relora relora_prune_ratio relora_prune_method relora_cpu_offload lora_mlp_kernel lora_qkv_kernel
        lora_o_kernel lora_embedding_kernel lora_fp32_gradients mixlora_num_experts mixlora_top_k
        mixlora_router_aux_loss_coef mixlora_router_init_range mixlora_jitter_noise mixlora_expert_lora_r
        mixlora_expert_lora_alpha mixlora_expert_lora_dropout"""),
    "quantization": _keys("""load_in_8bit load_in_4bit qlora_sharded_model_loading gptq bnb_config_kwargs qat
        quantization fp8 fp8_enable_fsdp_float8_all_gather fp8_config nf4_backend"""),
    "hyperparameters": _keys("""gradient_accumulation_steps micro_batch_size batch_size eval_batch_size
        auto_find_batch_size learning_rate embedding_lr embedding_lr_scale weight_decay max_grad_norm num_epochs
        max_steps neftune_noise_alpha noisy_embedding_alpha lisa_n_layers lisa_step_interval lisa_layers_attribute
        use_eaft eaft_alpha eaft_k use_dft diffusion_lm"""),
    "optimizer": _keys("""optimizer optim_args optim_target_modules torchdistx_path adam_epsilon adam_epsilon2
        adam_beta1 adam_beta2 adam_beta3 dion_lr dion_momentum dion_rank_fraction dion_rank_multiple_of qgalore_rank
        qgalore_update_proj_gap qgalore_scale qgalore_proj_type qgalore_proj_quant qgalore_proj_bits
        qgalore_proj_group_size qgalore_cos_threshold qgalore_gamma_proj qgalore_queue_size"""),
    "scheduler": _keys("""lr_scheduler lr_scheduler_kwargs lr_quadratic_warmup cosine_min_lr_ratio
        cosine_constant_lr_ratio lr_div_factor lr_groups warmup_steps warmup_ratio jagged_restart_steps
        jagged_restart_warmup_steps jagged_restart_anneal_steps"""),
    "precision": _keys("bf16 fp16 tf32 bfloat16 float16 float32 fp32_norms fp32_norm_classes"),
    "attention": _keys("""attn_implementation flash_attention sdp_attention xformers_attention flex_attention
        sage_attention eager_attention flex_attn_compile_kwargs flash_attn_cross_entropy flash_attn_fuse_mlp
        flash_optimum gemma4_hybrid_attn_impl large_head_attention flash_attn_d512 sdpa_varlen fused_attn_kernel
        scaling_softmax scaling_softmax_factor scaling_softmax_bias s2_attention flash_attn_rms_norm
        fa_varlen_kwargs_in_collator"""),
    "kernels": _keys("""chunked_cross_entropy chunked_cross_entropy_num_chunks tiled_mlp tiled_mlp_num_shards
        tiled_mlp_use_original_mlp torch_compile torch_compile_backend torch_compile_mode torch_compile_options
        torch_compile_regional full_determinism"""),
    "checkpointing": _keys("""gradient_checkpointing gradient_checkpointing_kwargs selective_checkpointing
        activation_offloading layer_offloading dynamic_checkpoint resume_from_checkpoint
        auto_resume_from_checkpoints output_dir save_steps saves_per_epoch save_strategy save_total_limit
        save_first_step save_only_model save_safetensors load_best_model_at_end metric_for_best_model
        greater_is_better early_stopping_patience export"""),
    "evaluation": _keys("""eval_steps evals_per_epoch eval_strategy evaluation_strategy do_causal_lm_eval
        eval_causal_lm_metrics do_bench_eval bench_dataset bench_split eval_table_size eval_max_new_tokens
        generate_samples num_generation_samples generation_max_new_tokens generation_temperature generation_top_p
        generation_top_k generation_prompt_ratio generation_do_sample eval_on_start"""),
    "logging": _keys("""logging_steps use_wandb wandb_name wandb_run_id wandb_mode wandb_project wandb_entity
        wandb_watch wandb_log_model use_mlflow mlflow_tracking_uri mlflow_experiment_name mlflow_run_name
        hf_mlflow_log_artifacts use_comet comet_api_key comet_workspace comet_project_name comet_experiment_key
        comet_mode comet_online comet_experiment_config use_trackio trackio_project_name trackio_run_name
        trackio_space_id use_otel_metrics otel_metrics_host otel_metrics_port use_tensorboard profiler_steps
        profiler_steps_start include_tokens_per_second include_tkps loss_watchdog_threshold loss_watchdog_patience
        strict logging_nan_inf_filter sync_profiler_steps sync_profiler_start_step"""),
    "hub": _keys("hub_model_id hub_strategy hub_revision"),
    "distributed": _keys("""fsdp fsdp_config fsdp_version fsdp_final_state_dict_type deepspeed deepcompile ddp
        ddp_timeout ddp_bucket_cap_mb ddp_broadcast_buffers ddp_find_unused_parameters world_size local_rank
        dp_shard_size dp_replicate_size sequence_parallel_degree context_parallel_size heads_k_stride
        ring_attn_func tensor_parallel_size use_ray ray_run_name ray_num_workers resources_per_worker
        accelerator_config dataloader_pin_memory dataloader_num_workers dataloader_prefetch_factor
        dataloader_drop_last remove_unused_columns gc_steps torch_empty_cache_steps gc_collect_steps"""),
    "rl": _keys("""rl trl vllm ebft rl_beta dpo_beta dpo_use_weighting dpo_label_smoothing precompute_ref_log_probs
        dpo_use_liger_kernel dpo_padding_free dpo_loss_type dpo_loss_weights dpo_use_logits_to_keep
        dpo_generate_during_eval dpo_norm_loss rpo_alpha orpo_alpha simpo_gamma cpo_alpha kto_desirable_weight
        kto_undesirable_weight dpo_ld_alpha"""),
    "reward_model": _keys("reward_model process_reward_model center_rewards_coefficient num_labels"),
    "multimodal": _keys("processor_type processor_kwargs image_size image_resize_algorithm role_boundaries"),
    "gradio": _keys("gradio_title gradio_share gradio_server_name gradio_server_port gradio_max_new_tokens "
                    "gradio_temperature"),
    # plugins: and the arguments of the plugins shipped in axolotl/integrations/ (the Args model a plugin's
    # get_input_args names). They act only when `plugins:` lists the plugin, which Tessera does not run.
    "plugins": _keys("""plugins liger_rope liger_rms_norm liger_rms_norm_gated liger_layer_norm liger_swiglu
        liger_glu_activation liger_cross_entropy liger_fused_linear_cross_entropy liger_use_token_scaling
        liger_kernel_impl cut_cross_entropy cut_cross_entropy_c_grad_chunk_size cut_cross_entropy_accum_c_fp32
        kd_trainer kd_ce_alpha kd_alpha kd_temperature kd_beta kd_normalize_topk kd_online_server_base_url
        kd_online_topk kd_online_server kd_online_timeout kd_temperature_min spectrum_top_fraction spectrum_model_name
        lm_eval_tasks lm_eval_batch_size lm_eval_post_train lm_eval_model use_swanlab swanlab_project
        swanlab_experiment_name swanlab_description swanlab_mode swanlab_workspace swanlab_api_key swanlab_log_model
        swanlab_web_host swanlab_api_host swanlab_lark_webhook_url swanlab_lark_secret swanlab_log_completions
        swanlab_completion_log_interval swanlab_completion_max_buffer grokfast_alpha grokfast_lamb dense_mixer
        expert_parallel_size expert_parallel_backend expert_parallel_num_nvl_bytes expert_parallel_num_rdma_bytes
        expert_parallel_token_capacity expert_parallel_fallback_on_unsupported expert_parallel_dispatch_chunks
        expert_parallel_save_dispatch llmcompressor hatchery diffusion mora nemo_gym_enabled nemo_gym_dir
        nemo_gym_auto_clone nemo_gym_config_paths nemo_gym_head_port nemo_gym_server_timeout nemo_gym_verify_timeout
        nemo_gym_run_timeout nemo_gym_datasets nemo_gym_auto_start nemo_gym_model_name nemo_gym_multi_turn
        nemo_gym_max_turns expert_backend nonexpert_quantization moe_grouped_backend moe_dequant_chunk_size moe_bnb_fast
        use_scattermoe use_sonicmoe use_dsv4_kernels use_glm_dsa_kernels dsv4_fp8_nonexpert_mode dsv4_fp8_lora_kernel
        dsv4_shared_mlp_lora_kernel dsv4_bf16_all dsv4_fp4_grouped_mode gemma4_fp8_nonexpert gemma4_nf4_nonexpert
        nvfp4_merge_aware nvfp4_merge_aware_start_step autotune_cache_path autotune_neighborhood autotune_profiles
        context_parallel coreweave diffusion_decision"""),
    # Not in Axolotl's schema any more (it ignores unknown keys) but still in configs written for it, including
    # its own examples/: old GPTQ and debug switches, and the keys of `axolotl` cloud launchers (Modal).
    "legacy": _keys("""gptq_groupsize gptq_model_v1 gptq_disable_exllama adam_eps eta_min debug
        max_packed_sequence_len rope_scaling sample_packing_seq_len_multiplier base_model_ignore_patterns
        torch_dtype project_name provider gpu gpu_count node_count memory memory_preprocess timeout
        timeout_preprocess volumes secrets branch dockerfile_commands"""),
}

# SFTDataset's keys: a `datasets:` entry, and also a `pretraining_dataset:` entry (Axolotl's schema takes either
# model there, but its loader reads only path, name, skip, split, data_files, type and text_column)
_SFT_DATASET = _keys("""path split type input_transform shards shards_idx preprocess_shards conversation
    chat_template chat_template_jinja data_files input_format name ds_type field field_human field_model
    field_messages field_tools field_thinking template_thinking_key message_field_role message_field_content
    message_property_mappings message_field_training message_field_training_detail split_thinking logprobs_field
    temperature roles_to_train train_on_eos train_on_eot roles drop_system_message trust_remote_code revision
    weight""")

# ---- nested sections, by their path in the config tree ("datasets" covers every entry of the list)
SECTION_KEYS: dict[str, tuple[str, ...]] = {
    # SFTDataset, plus the keys of the other dataset kinds (preference, KTO, stepwise, synthetic), which
    # Axolotl accepts in the same `datasets:` list
    "datasets": _SFT_DATASET + _keys("""field_chosen field_rejected step_separator max_completion_length
        train_on_last_step_only length sequence_length min_input_id max_input_id seed min_turns max_turns
        min_turn_length input_fraction"""),
    # UserDefinedPrompterType, and the DPO/KTO custom types' keys
    "datasets.type": _keys("""system_prompt system_format field_system field_instruction field_input field_output
        format no_input_format field_prompt field_chosen field_rejected prompt_format chosen_format rejected_format
        field_completion field_label completion_format"""),
    "special_tokens": _keys("bos_token eos_token pad_token unk_token additional_special_tokens"),
    # FSDPConfig (unprefixed, current), its deprecated `fsdp_` spellings, and accelerate's FSDP plugin keys
    # that older configs carry
    "fsdp_config": _keys("""fsdp_version version activation_checkpointing offload_params sync_module_states
        cpu_ram_efficient_loading cpu_offload_pin_memory use_orig_params state_dict_type final_state_dict_type
        auto_wrap_policy transformer_layer_cls_to_wrap min_num_params reshard_after_forward mixed_precision_policy
        backward_prefetch forward_prefetch sharding_strategy limit_all_gathers backward_prefetch_policy"""),
    # PretrainingDataset, then SFTDataset's other keys (see _SFT_DATASET)
    "pretraining_dataset": _keys("name path split text_column type trust_remote_code data_files skip")
    + tuple(k for k in _SFT_DATASET if k not in ("name", "path", "split", "type", "trust_remote_code",
                                                "data_files")),
}
for _k in list(SECTION_KEYS["fsdp_config"]):
    if not _k.startswith("fsdp_") and _k != "version":
        SECTION_KEYS["fsdp_config"] += ("fsdp_" + _k,)

_PREFERENCE = ("preference training (DPO, IPO, ORPO, KTO, SimPO, GRPO, EBFT) is not available yet in Tessera, "
               "which trains supervised fine-tuning only")
_REWARD = ("reward-model training (Bradley-Terry, process reward models) is not available yet in Tessera, which "
           "trains causal-LM supervised fine-tuning only")
_LOCAL = "Tessera reads local files only and prepares them ahead of training"
_PENDING = "not available in this version of Tessera yet"

# (section, key) -> what Tessera does instead. Section "" is the top level. An error only when the value is set
# (not empty, false, 0 or an empty list/mapping): `rl:` left empty means supervised training, as in Axolotl.
NOT_SUPPORTED: dict[tuple[str, str], str] = {
    ("", "rl"): f"{_PREFERENCE}; remove `rl` to train SFT on chat or instruct data",
    ("", "reward_model"): _REWARD,
    ("", "process_reward_model"): _REWARD,
    ("", "processor_type"): "multimodal (image/audio) training is not available in Tessera, which prepares text "
                            "only; remove processor_type to train on the text of the conversations",
    ("", "streaming"): f"{_LOCAL}: remove `streaming` and run `tessera prepare --workers N` once on the data",
    ("", "test_datasets"): "Tessera makes the evaluation split from `datasets:` itself (val_set_size); a separate "
                           "test_datasets list is not available yet",
    ("", "dataset_shard_num"): "Tessera reads whole datasets: take a part with a split slice, e.g. "
                               "`split: train[0%:25%]` in the dataset entry",
    ("", "dataset_shard_idx"): "Tessera reads whole datasets: take a part with a split slice, e.g. "
                               "`split: train[25%:50%]` in the dataset entry",
    ("", "use_pose"): "PoSE position-id skipping is not available: Tessera's position_ids restart at 0 for each "
                      "packed sample",
    ("", "use_dft"): "the DFT loss (each token's cross-entropy weighted by its own probability) is not available: "
                     "Tessera trains plain cross-entropy over the trained tokens; remove use_dft",
    ("", "use_eaft"): "the EAFT loss (Entropy-Aware Focal Training: token losses weighted by the model's entropy) is "
                      "not available: Tessera trains plain cross-entropy over the trained tokens; remove use_eaft",
    ("", "diffusion_lm"): "diffusion language-model training is not available: Tessera trains causal LMs on "
                          "next-token prediction; remove diffusion_lm",
    ("", "added_tokens_overrides"): "renaming tokens of the vocabulary is not available: Tessera adds new tokens "
                                    "with `tokens:` and overrides bos/eos/pad/unk with `special_tokens:`",
    ("special_tokens", "additional_special_tokens"): "extra special tokens are not available: add them with the "
                                                      "top-level `tokens:` list (as added tokens)",
    ("datasets", "shards"): "Tessera reads whole datasets: take a part with a split slice, e.g. "
                            "`split: train[0%:25%]`",
    ("datasets", "shards_idx"): "Tessera reads whole datasets: take a part with a split slice, e.g. "
                                "`split: train[25%:50%]`",
    ("datasets", "input_transform"): "input transforms of `type: messages` are not available; use "
                                     "`type: chat_template`",
    ("datasets", "input_format"): "input formats of `type: messages` are not available; use `type: chat_template`",
    ("datasets", "logprobs_field"): "knowledge-distillation datasets (teacher logprobs) are not available yet",
    ("datasets", "temperature"): "knowledge-distillation datasets (teacher logprobs) are not available yet",
    ("datasets", "field_chosen"): _PREFERENCE,
    ("datasets", "field_rejected"): _PREFERENCE,
    ("datasets", "step_separator"): _REWARD,
    ("datasets", "max_completion_length"): _REWARD,
    ("datasets", "train_on_last_step_only"): _REWARD,
    ("datasets.type", "field_prompt"): _PREFERENCE,
    ("datasets.type", "field_chosen"): _PREFERENCE,
    ("datasets.type", "field_rejected"): _PREFERENCE,
    ("datasets.type", "prompt_format"): _PREFERENCE,
    ("datasets.type", "chosen_format"): _PREFERENCE,
    ("datasets.type", "rejected_format"): _PREFERENCE,
    ("datasets.type", "field_completion"): _PREFERENCE,
    ("datasets.type", "field_label"): _PREFERENCE,
    ("datasets.type", "completion_format"): _PREFERENCE,
}
# SyntheticDataset's keys: random token rows Axolotl makes up (for benchmarks) instead of reading a dataset
for _k in _keys("length sequence_length min_input_id max_input_id seed min_turns max_turns min_turn_length "
                "input_fraction"):
    NOT_SUPPORTED[("datasets", _k)] = "synthetic datasets are not available: give a local file as `path`"
# Dataset keys with a meaning for the rendered tokens that Tessera does not read yet: an error (ignoring them
# would train other tokens than Axolotl does). A key becomes supported once DatasetConfig has its field.
for _k in _keys("""field_human field_model"""):
    NOT_SUPPORTED[("datasets", _k)] = _PENDING

# Two spellings of one setting: (section, Axolotl's key) -> (section, key) of Tessera's field, used only when the
# first is not a field itself and the second is. `fsdp_config` keys are matched with and without the `fsdp_`
# prefix in axolotl_compat (Axolotl accepts both), and `message_property_mappings` entries become
# `message_field_<name>` there.
RENAMED: dict[tuple[str, str], tuple[str, str]] = {
    ("", "dataset_num_proc"): ("", "dataset_processes"),
    ("", "type_of_model"): ("", "model_type"),
    ("", "revision_of_model"): ("", "model_revision"),
    ("", "overrides_of_model_config"): ("", "model_config"),
    ("", "overrides_of_model_kwargs"): ("", "model_kwargs"),
    ("", "dataset_processes"): ("", "dataset_num_proc"),
    ("", "fsdp_version"): ("fsdp_config", "fsdp_version"),
    ("", "fsdp_final_state_dict_type"): ("fsdp_config", "final_state_dict_type"),
    ("", "evaluation_strategy"): ("", "eval_strategy"),
    ("", "noisy_embedding_alpha"): ("", "neftune_noise_alpha"),
    ("", "sequence_parallel_degree"): ("", "context_parallel_size"),
    ("", "pretrain_multipack_buffer_size"): ("", "streaming_multipack_buffer_size"),
    ("", "dpo_beta"): ("", "rl_beta"),
}
# Boolean switches Axolotl replaced by one value of another key: `eager_attention: true` is
# `attn_implementation: eager`. (`flash_attention`/`sdp_attention` are fields of Tessera's own.)
SWITCHES: dict[str, tuple[str, str]] = {
    "eager_attention": ("attn_implementation", "eager"),
    "flash_attention": ("attn_implementation", "flash_attention_2"),
    "sdp_attention": ("attn_implementation", "sdpa"),
    "xformers_attention": ("attn_implementation", "xformers"),
    "sage_attention": ("attn_implementation", "sage"),
    "flex_attention": ("attn_implementation", "flex_attention"),
}

# Names other tools (TRL, transformers' TrainingArguments, LLaMA-Factory, torchtune) use for an Axolotl key:
# the "did you mean" of an unknown key, before any spelling match. By section.
HINTS: dict[str, dict[str, str]] = {
    "": {
        "max_seq_length": "sequence_len", "max_seq_len": "sequence_len", "max_length": "sequence_len",
        "seq_len": "sequence_len", "cutoff_len": "sequence_len", "model_max_length": "sequence_len",
        "model_name_or_path": "base_model", "model_name": "base_model", "model": "base_model",
        "model_path": "base_model", "base_model_path": "base_model", "tokenizer_path": "tokenizer_config",
        "flash_attn": "flash_attention", "use_flash_attention": "flash_attention",
        "flash_attention_2": "flash_attention",
        "tokenizer": "tokenizer_config", "tokenizer_name_or_path": "tokenizer_config",
        "dataset": "datasets", "data": "datasets", "train_datasets": "datasets",
        "num_train_epochs": "num_epochs", "epochs": "num_epochs", "lr": "learning_rate",
        "per_device_train_batch_size": "micro_batch_size", "batch_size_per_device": "micro_batch_size",
        "gradient_accumulation": "gradient_accumulation_steps", "grad_accum": "gradient_accumulation_steps",
        "lora_rank": "lora_r", "lora_target": "lora_target_modules", "target_modules": "lora_target_modules",
        "packing": "sample_packing", "pack_sequences": "sample_packing", "lr_scheduler_type": "lr_scheduler",
        "warmup": "warmup_steps", "max_gradient_norm": "max_grad_norm", "clip_grad_norm": "max_grad_norm",
        "resume": "resume_from_checkpoint", "checkpoint_dir": "output_dir", "save_dir": "output_dir",
        "preprocessing_num_workers": "dataset_num_proc", "num_proc": "dataset_num_proc",
        "chat_template_path": "chat_template_jinja", "template": "chat_template",
        "validation_split": "val_set_size", "val_size": "val_set_size", "eval_size": "val_set_size",
        "dedup": "dataset_exact_deduplication", "deduplicate": "dataset_exact_deduplication",
        "report_to": "use_wandb", "wandb_run_name": "wandb_name",
    },
    "datasets": {
        "messages_field": "field_messages", "messages": "field_messages", "conversations": "field_messages",
        "role_field": "message_field_role", "content_field": "message_field_content",
        "format": "type", "dataset_type": "type", "file": "path", "data_path": "path", "files": "data_files",
        "text_field": "field", "text_column": "field", "train_on_roles": "roles_to_train",
    },
}

# Keys whose empty value is a setting of its own, not "the default": Axolotl's docs write `field_input:` and
# `field_system:` empty in a custom instruct `type:` for rows that have no such column.
EMPTY_IS_A_VALUE: frozenset[tuple[str, str]] = frozenset({("datasets.type", "field_system"),
                                                         ("datasets.type", "field_input")})
# NOT_SUPPORTED keys whose empty mapping switches the feature on: `diffusion_lm: {}` is diffusion training with
# Axolotl's defaults (its DiffusionLMConfig has a default for every field), not "unset".
EMPTY_MAPPING_IS_ON: frozenset[tuple[str, str]] = frozenset({("", "diffusion_lm")})

# Plugins (`plugins:` entries, axolotl.integrations.<name>.<Class>) that change what is trained or how: Tessera runs
# no Axolotl plugin, so a config listing one would train something else without a word. Name -> what it does. The
# others (kernels: liger, cut_cross_entropy, kernels, densemixer, fla_sm120_shim; parallelism: expert_parallel,
# context_parallel; evaluation and logging: lm_eval, swanlab; launchers: baseten, modal, nebius, coreweave) leave
# the trained model the same and are not used.
PLUGINS_THAT_CHANGE_TRAINING: dict[str, str] = {
    "kd": "knowledge distillation (a loss against a teacher's logits)",
    "diffusion": "diffusion language-model training",
    "diffusion_decision": "typed decision training for diffusion language models",
    "nemo_gym": "reinforcement learning in NeMo Gym environments",
    "hatchery": "training on a remote service (Tinker / Hatchery)",
    "grokfast": "the Grokfast gradient filter (it amplifies the slow components of each gradient)",
    "spectrum": "Spectrum (it freezes the layers of low signal-to-noise ratio)",
    "llm_compressor": "sparsity-preserving fine-tuning (LLMCompressor keeps the pruned weights at zero)",
    "mixlora": "MixLoRA adapters (a mixture of LoRA experts)",
    "mora": "MoRA adapters (high-rank updates)",
}
