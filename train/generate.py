"""`tessera generate CONFIG --prompt TEXT | --messages FILE`: chat with a trained model, as it was trained.

- The prompt is rendered with the tokenizer saved next to the weights (final/tokenizer, a copy of what
  `prepare` used, chat template included) through transformers' `apply_chat_template(...,
  add_generation_prompt=True, **chat_template_kwargs)`, with `strftime_now` pinned to chat_template_date as
  prepare renders, and tokenized without adding special tokens again: the ids `tessera golden` checks against
  the training ids.
- Decoding is greedy unless --temperature > 0 (then sampling with --top-p, seeded by --seed); the text streams
  to the terminal as it is generated.
- It stops at any of: the tokenizer's eos, the generation config's eos ids, and the template's end-of-turn
  token (found by rendering a probe turn, as prepare's probes do): a chat model ends its answer with the
  end-of-turn token, which for many templates is not the tokenizer's eos.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch

from dataprep.look.golden import pinned_clock
from schemas.config import Config
from train.artifacts import ArtifactError, load_model_from, tokenizer_dir

_PROBE = "Tessera probe answer 7f3a"


@dataclass
class Generation:
    prompt_ids: list[int]
    new_ids: list[int]
    text: str
    stopped_at: int | None  # the end-of-turn/eos id that ended it, None when max_new_tokens did


def read_messages(path: Path) -> list[dict[str, str]]:
    """A JSON list of {role, content} messages (the last one usually from the user)."""
    try:
        messages = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"--messages {path}: cannot read it as JSON ({e})") from None
    if not isinstance(messages, list) or not messages:
        raise ArtifactError(f"--messages {path}: expected a JSON list of {{\"role\": ..., \"content\": ...}} "
                            "messages")
    for i, m in enumerate(messages):
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            raise ArtifactError(f"--messages {path}: message {i} must be an object with string 'role' and "
                                "'content'")
    return messages


def load_tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


def prompt_ids(tok: Any, messages: list[dict[str, str]], date: str,
               template_kwargs: dict[str, Any] | None = None) -> list[int]:
    """The generation prompt's ids, rendered exactly as the training data was (chat_template_kwargs too: Qwen3's
    enable_thinking changes the prompt itself)."""
    if not tok.chat_template:
        raise ArtifactError("the saved tokenizer has no chat template (the data was not chat-formatted); "
                            "--prompt needs one")
    with pinned_clock(datetime.date.fromisoformat(date)):
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **(template_kwargs or {}))
    return tok(text, add_special_tokens=False)["input_ids"]


def stop_ids(tok: Any, model: torch.nn.Module, date: str, template_kwargs: dict[str, Any] | None = None) -> list[int]:
    """eos ids of the tokenizer and generation config, plus the special token that closes an assistant turn."""
    ids: set[int] = set()
    if tok.eos_token_id is not None:
        ids.add(int(tok.eos_token_id))
    gen = getattr(model, "generation_config", None)
    eos = getattr(gen, "eos_token_id", None)
    ids.update([eos] if isinstance(eos, int) else (eos or []))
    if (eot := end_of_turn_token(tok, date, template_kwargs)) is not None:
        ids.add(tok.convert_tokens_to_ids(eot))
    return sorted(ids)


def end_of_turn_token(tok: Any, date: str, template_kwargs: dict[str, Any] | None = None) -> str | None:
    """The first special token the template writes after an assistant message's content."""
    if not tok.chat_template:
        return None
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": _PROBE}]
    with pinned_clock(datetime.date.fromisoformat(date)):
        text = tok.apply_chat_template(messages, tokenize=False, **(template_kwargs or {}))
    end = text.rfind(_PROBE)
    if end < 0:
        return None
    rest = text[end + len(_PROBE):]
    specials = {str(t) for t in tok.added_tokens_decoder.values() if t.special} | set(tok.all_special_tokens)
    found = [(rest.find(s), -len(s), s) for s in specials if s and rest.find(s) >= 0]
    return min(found)[2] if found else None


def generate(cfg: Config, weights: Path, messages: list[dict[str, str]], *, prepared: Path | None = None,
             max_new_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0, seed: int = 0,
             stream: TextIO | None = None) -> Generation:
    tok = load_tokenizer(tokenizer_dir(cfg, weights, prepared))
    model = load_model_from(weights, cfg, quantized=True)
    ids = prompt_ids(tok, messages, cfg.chat_template_date, cfg.chat_template_kwargs)
    stops = stop_ids(tok, model, cfg.chat_template_date, cfg.chat_template_kwargs)
    streamer = _streamer(tok, stream) if stream is not None else None
    torch.manual_seed(seed)
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else \
        {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    input_ids = torch.tensor([ids])
    with torch.no_grad():
        out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                             max_new_tokens=max_new_tokens, eos_token_id=stops,
                             pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else stops[0],
                             streamer=streamer, **sampling)
    new = out[0, len(ids):].tolist()
    stopped = new[-1] if new and new[-1] in stops else None
    return Generation(ids, new, tok.decode(new, skip_special_tokens=True), stopped)


def _streamer(tok: Any, stream: TextIO) -> Any:
    """transformers' TextStreamer writing to `stream` (stdout by default), without the prompt."""
    from transformers import TextStreamer

    class Streamer(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            stream.write(text + ("\n" if stream_end else ""))
            stream.flush()

    return Streamer(tok, skip_prompt=True, skip_special_tokens=True)
