"""Tessera data preparation: config -> validated, templated, tokenized, packed Arrow shards."""

__version__ = "0.1.0"
