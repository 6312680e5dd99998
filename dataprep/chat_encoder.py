"""The chat-encoder interface: how a `type: chat_template` dataset's conversations become (input_ids, labels).

Two implementations, chosen once per dataset by `transform.chat_encoder_for` from the tokenizer:
- `TemplateEncoder` (template_encoder.py): the dataset's Jinja chat template, rendered as transformers'
  `apply_chat_template` renders it, tokenized once; labels from the trained character spans (render.py).
- `MistralEncoder` (mistral.py): mistral-common's own `encode_chat_completion`, for `tokenizer_config:
  mistral:<file>`; labels from its per-message token lists.

A tokenizer that encodes conversations itself (mistral-common) says so with `TokenizerInfo.chat_encoding`; every
other tokenizer gets the template encoder. Nothing else in the pipeline knows which one it has.

This module holds only the interfaces, so that every module can name them without importing an implementation
(dataprep.mistral imports mistral-common, ~1 s, only for the mistral: route).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from dataprep.formats import Chat, RowError

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from schemas.config import Config, DatasetConfig

Encoded = tuple[np.ndarray, np.ndarray]  # (input_ids, labels), int32, same length; labels -100 where not trained


@runtime_checkable
class ChatEncoder(Protocol):
    """One dataset's conversations -> (input_ids, labels), with the dataset's training options bound."""

    name: str  # what the report, the manifest and error messages call it: the template's name, or the encoder's

    def encode(self, chats: Sequence[Chat]) -> list[Encoded | RowError]:
        """One result per chat, in order: its ids and labels, or the RowError that quarantines it. Raises only
        for failures that are not the rows' (a library that changed behaviour)."""
        ...

    def probe(self, where: str) -> dict[str, Any]:
        """Checks on a synthetic conversation before any row is read (raises probes.ProbeError with the fix);
        returns the facts recorded in the manifest's `probes`. `where` names the dataset in messages."""
        ...


@runtime_checkable
class TokenizerChatEncoding(Protocol):
    """A tokenizer that encodes conversations itself, without a chat template (mistral-common)."""

    name: str  # e.g. "mistral-common v3 (tekken)": the template name in the report and the manifest

    def encoder(self, cfg: Config, ds: DatasetConfig) -> ChatEncoder:
        """The encoder for one dataset, with its training options."""
        ...

    def save(self, folder: Path, vocabulary: Tokenizer) -> dict[str, str]:
        """Write the files serving needs into `folder` (the prepared tokenizer/); returns file name -> sha256."""
        ...
