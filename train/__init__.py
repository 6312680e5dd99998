"""Tessera's trainer: streams prepared Arrow shards (train/data.py) into a transformers model, full fine-tune or
peft LoRA, with accelerate for devices and processes. `tessera train CONFIG` / `python -m train CONFIG`; the loop
is train/loop.py::train, its keys live in schemas/config.py's trainer section.
"""
