"""Tessera's trainer: streams prepared Arrow shards (train/data.py) into a transformers model, full fine-tune or
peft LoRA, on one process or several (torch.distributed: DDP or FSDP2, train/distributed.py; launched by torchrun
or `accelerate launch`). `tessera train CONFIG` / `python -m train CONFIG`; the loop
is train/loop.py::train, its keys live in schemas/trainer_keys.py.
"""

import logging

# peft and transformers import torchao when it is installed (the gpu and dev extras: its low-bit AdamWs). Tessera
# uses only its optimizers, which are Python: the CUDA kernel libraries it tries to load at import ("Failed to
# load ..._C_cutlass_90a.abi3.so", on every CPU machine) and torch's note on the enums it registers are noise on
# every run's stderr, so they are kept to errors.
for _name in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_name).setLevel(logging.ERROR)
