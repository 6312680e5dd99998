"""Tessera's trainer: streams prepared Arrow shards (see schemas/shard.py) onto GPUs with accelerate/FSDP for
full, LoRA and QLoRA fine-tuning. Its config keys already live in schemas/config.py; the loop is not written yet.
"""
