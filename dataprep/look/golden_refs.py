"""The inference-side references `tessera golden` compares with, computed without Tessera's encoders.

- Chat templates (`template_reference`): transformers' `apply_chat_template` of the saved tokenizer. Labels:
  each trained assistant turn is what the model generates after its generation prompt (the render of the
  conversation so far with add_generation_prompt=True), through the first special token after it (its
  end-of-turn token): content, reasoning and tool calls alike. With train_on_reasoning false the reasoning
  text itself is left out.
- mistral-common (`MistralReference`): the request is built by mistral-common's own OpenAI converter
  (`ChatCompletionRequest.from_openai(messages, tools=...)`, what transformers' MistralCommonBackend uses), and
  the ids are `encode_chat_completion(...).tokens` in finetuning mode. Labels, by prefixes: an assistant turn's
  tokens are what encoding the conversation through that turn (finetuning mode) adds to encoding the
  conversation before it (the prompt, test mode); they are found in the whole conversation's ids in order. All
  of them are trained but its </s> (train_on_eos), the thinking text with train_on_reasoning false, and from
  the first [TOOL_CALLS] on with train_on_tool_calls false.

Labels are compared only where these definitions are complete: rows whose trained messages are all assistant
turns, without training detail or content parts, and not merged with a neighbouring assistant message. For
other rows `None` means: ids only.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from dataprep.encode import straddles
from dataprep.formats import Chat
from schemas.shard import IGNORE_INDEX


def _plain_assistant_training(chat: Chat) -> bool:
    """Only whole assistant messages are trained."""
    if any(d is not None for d in chat.detail) or chat.reasoning_detail is not None:
        return False
    return all(m["role"] == "assistant" for m, t in zip(chat.messages, chat.train, strict=True) if t)


def template_reference(tok: Any, chat: Chat, template: str | None = None,
                       template_kwargs: dict[str, Any] | None = None) -> tuple[list[int], list[int] | None]:
    """`template`: the saved tokenizer's named template the dataset was rendered with (None: the default);
    `template_kwargs`: chat_template_kwargs, passed to every apply_chat_template call as an inference server
    must pass them."""
    kwargs = {**(template_kwargs or {}), "tools": chat.tools, **({"chat_template": template} if template else {})}
    full = tok.apply_chat_template(chat.messages, tokenize=False, **kwargs)
    enc = tok(full, add_special_tokens=False, return_offsets_mapping=True)
    if not _plain_assistant_training(chat) or (not chat.train_tool_calls and _has_calls(chat)):
        return enc["input_ids"], None  # no independent definition of the trained characters: ids only
    specials = sorted((t for t in tok.all_special_tokens + [str(t) for t in tok.added_tokens_decoder.values()
                                                             if t.special]), key=len, reverse=True)
    regions, masked = [], []
    cursor = 0
    for i, msg in enumerate(chat.messages):
        if not chat.train[i]:
            continue
        prompt = tok.apply_chat_template(chat.messages[:i], tokenize=False, add_generation_prompt=True, **kwargs)
        content = (msg.get("content") or "").strip()
        if full.startswith(prompt):
            start = len(prompt)
        elif content and not msg.get("tool_calls"):
            start = full.find(content, cursor)
        else:
            return enc["input_ids"], None
        if start < 0:
            return enc["input_ids"], None
        # The end-of-turn token: the first special token after the content (after the start for a message
        # whose content is empty or not written as is, such as a tool call).
        after = full.find(content, start) + len(content) if content and full.find(content, start) >= 0 else start
        stops = [(full.find(s, after), s) for s in specials if full.find(s, after) >= 0]
        end = min(stops)[0] + len(min(stops)[1]) if stops else len(full)
        regions.append((start, end))
        thought = chat.reasoning_key(i)
        if not chat.train_reasoning and thought is not None and msg[thought].strip():
            at = full.find(msg[thought].strip(), start, end)
            if at >= 0:
                masked.append((at, at + len(msg[thought].strip())))
        cursor = end
    # A token that starts before a turn and carries its first characters is the turn's by encode.py's rule
    # (Mistral's '[/INST] Hi' -> '▁Hi', as Axolotl trains it).
    def turn(s: int, e: int, a: int, b: int) -> bool:
        return a <= s < b or straddles((s, e), a, b, full)

    labels = [t if any(turn(s, e, a, b) for a, b in regions) and not any(a <= s < b for a, b in masked)
              else IGNORE_INDEX for t, (s, e) in zip(enc["input_ids"], enc["offset_mapping"], strict=True)]
    labels[0] = IGNORE_INDEX
    return enc["input_ids"], labels


def _has_calls(chat: Chat) -> bool:
    return any(m.get("tool_calls") for m in chat.messages)


def openai_messages(chat: Chat) -> list[dict[str, Any]]:
    """The messages as an OpenAI client sends them: mistral-common reads reasoning from reasoning_content."""
    out = []
    for m in chat.messages:
        m = {k: v for k, v in m.items() if k not in ("thinking", "reasoning")}
        out.append(m)
    return out


class MistralReference:
    """mistral-common on its own: `from_openai` requests, `encode_chat_completion` ids, labels by prefixes."""

    def __init__(self, tokenizer_file: Path):
        from mistral_common.protocol.instruct.normalize import get_normalizer
        from mistral_common.protocol.instruct.validator import ValidationMode, get_validator
        from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

        self.finetuning = MistralTokenizer.from_file(str(tokenizer_file), mode=ValidationMode.finetuning)
        # The same tokenizer with the validator of test mode (prompts end with a user or tool message), built as
        # `from_file` builds it, without loading the file again (a tekken file takes seconds).
        instruct = self.finetuning.instruct_tokenizer
        self.prompting = MistralTokenizer(instruct, get_validator(instruct.tokenizer.version, ValidationMode.test),
                                          get_normalizer(instruct.tokenizer.version,
                                                         instruct.tokenizer.model_settings_builder))
        text = self.finetuning.instruct_tokenizer.tokenizer
        self.eos = text.eos_id
        self.specials = {name: text.get_special_token(name) for name in ("[TOOL_CALLS]", "[THINK]", "[/THINK]")
                         if _has_special(text, name)}

    def _encode(self, chat: Chat, upto: int, finetuning: bool) -> list[int]:
        from mistral_common.protocol.instruct.request import ChatCompletionRequest

        request = ChatCompletionRequest.from_openai(openai_messages(chat)[:upto], tools=chat.tools)
        tokenizer = self.finetuning if finetuning else self.prompting
        return list(tokenizer.encode_chat_completion(request).tokens)

    def ids(self, chat: Chat) -> list[int]:
        return self._encode(chat, len(chat.messages), True)

    def ids_and_labels(self, chat: Chat, train_on_eos: str) -> tuple[list[int], list[int] | None]:
        ids = self.ids(chat)
        roles = [m["role"] for m in chat.messages]
        if not _plain_assistant_training(chat) or any(a == b == "assistant" for a, b in itertools.pairwise(roles)):
            return ids, None  # mistral-common merges consecutive assistant messages into one turn
        labels = [IGNORE_INDEX] * len(ids)
        assistants = [i for i, m in enumerate(chat.messages) if m["role"] == "assistant"]
        last_trained = max((i for i in assistants if chat.train[i]), default=-1)
        cursor = 0
        for i in assistants:
            try:
                turn = self._encode(chat, i + 1, True)
                prompt = self._encode(chat, i, False)
            except Exception:  # e.g. a conversation that starts with the assistant has no prompt to encode
                return ids, None
            if turn[:len(prompt)] != prompt:
                return ids, None  # not prefix-preserving here: no reference
            tokens = turn[len(prompt):]
            at = _find(ids, tokens, cursor)
            if at < 0:
                continue  # not in the whole conversation (v2 drops tool calls before the last user turn)
            cursor = at + len(tokens)
            if chat.train[i]:
                for k in self._trained(tokens, chat):
                    labels[at + k] = ids[at + k]
            wanted = train_on_eos == "all" or (train_on_eos == "turn" and chat.train[i]) or (
                train_on_eos == "last" and i == last_trained)
            if tokens and tokens[-1] == self.eos and wanted:
                labels[at + len(tokens) - 1] = self.eos
        labels[0] = IGNORE_INDEX
        return ids, labels

    def _trained(self, tokens: list[int], chat: Chat) -> list[int]:
        """Positions within an assistant turn's tokens that are trained (its </s> aside)."""
        body = tokens[:-1] if tokens and tokens[-1] == self.eos else tokens
        keep = [True] * len(body)
        calls = self.specials.get("[TOOL_CALLS]")
        if not chat.train_tool_calls and calls in body:
            for k in range(body.index(calls), len(body)):
                keep[k] = False
        think, end = self.specials.get("[THINK]"), self.specials.get("[/THINK]")
        if not chat.train_reasoning and think in body:
            stop = body.index(end) if end in body else len(body)
            for k in range(body.index(think) + 1, stop):
                keep[k] = False
        return [k for k, flag in enumerate(keep) if flag]


def _has_special(text: Any, name: str) -> bool:
    try:
        text.get_special_token(name)
    except Exception:  # mistral-common raises different errors per tokenizer kind for a missing token
        return False
    return True


def _find(haystack: list[int], needle: list[int], start: int) -> int:
    n = len(needle)
    if not n:
        return -1
    for k in range(start, len(haystack) - n + 1):
        if haystack[k:k + n] == needle:
            return k
    return -1
