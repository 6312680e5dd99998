"""The template chat encoder: a dataset's Jinja chat template rendered the way `apply_chat_template` renders it
(render.py), the text tokenized once for the whole batch (encode.py), labels from the trained character spans.
It implements chat_encoder.ChatEncoder; `transform.chat_encoder_for` builds it for every tokenizer that does not
encode conversations itself.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

from dataprep import probes
from dataprep.chat_encoder import Encoded
from dataprep.encode import TokenizerInfo, encode
from dataprep.formats import Chat, RowError
from dataprep.render import ChatRenderer, Rendered, compile_template
from schemas.config import Config, DatasetConfig


class TemplateEncoder:
    def __init__(self, cfg: Config, ds: DatasetConfig, tok: TokenizerInfo, template_text: str,
                 name: str | None = None, cut_at: int | None = None):
        """`cut_at`: excess_length_strategy truncate keeps only the first sequence_len tokens, which lie well
        within the first `cut_at` characters, so the rendered text is cut there before tokenizing (memory)."""
        self.cfg, self.ds, self.tok = cfg, ds, tok
        self.name = name or "chat_template"
        self.cut_at = cut_at
        # Raises jinja2.TemplateError for a template that does not compile: setup reports it as a config error.
        template = compile_template(template_text, datetime.date.fromisoformat(cfg.chat_template_date))
        self.renderer = ChatRenderer(template, tok.variables, tok.specials, ds.train_on_eos, cfg.train_on_inputs,
                                     ds.train_on_eot, cfg.eot_tokens, cfg.chat_template_kwargs)

    def encode(self, chats: Sequence[Chat]) -> list[Encoded | RowError]:
        out: list[Encoded | RowError] = []
        rendered: list[Rendered] = []
        for chat in chats:
            try:
                r = self.renderer.render(chat)
            except RowError as e:
                out.append(e)
                continue
            rendered.append(r if self.cut_at is None else cut(r, self.cut_at))
            out.append((None, None))  # type: ignore[arg-type]  # filled below, from the batch's one tokenizer call
        # Templates write BOS themselves: add_special_tokens=False, as apply_chat_template tokenizes.
        done = iter(encode(self.tok.tokenizer, rendered))
        return [next(done) if not isinstance(o, RowError) else o for o in out]

    def probe(self, where: str) -> dict[str, Any]:
        return probes.probe_template(self.cfg, self.ds, self.tok, self.renderer, self.name, where)


def cut(rendered: Rendered, limit: int) -> Rendered:
    """The first `limit` characters and the spans within them."""
    if len(rendered.text) <= limit:
        return rendered
    spans = [(a, min(b, limit)) for a, b in rendered.spans if a < limit]
    return Rendered(rendered.text[:limit], spans, tuple(g for g in rendered.grab if g < limit))
