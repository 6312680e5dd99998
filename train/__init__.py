"""Tessera's trainer: streams prepared Arrow shards (train/data.py) into a transformers model, full fine-tune or
peft LoRA, on one process or several (torch.distributed: DDP or FSDP2, train/distributed.py; launched by torchrun
or `accelerate launch`). `tessera train CONFIG` / `python -m train CONFIG`; the loop
is train/loop.py::train, its keys live in schemas/config.py's trainer section.
"""
