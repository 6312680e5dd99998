"""Which of mistral-common's tokens a Mistral row trains: its labels, from the token list of each normalised
message. mistral.py makes those lists with mistral-common's per-message encoders and checks that BOS plus their
concatenation is `encode_chat_completion`; this module only decides, per turn, which of the ids are trained.
It imports no mistral-common: the control tokens it needs come in a `Markers`.

Within one message's list, the content is what lies between the leading and trailing control tokens ([INST] ...
[/INST], [SYSTEM_PROMPT] ... [/SYSTEM_PROMPT], [TOOL_RESULTS] ... [/TOOL_RESULTS], ... </s>), because
mistral-common never encodes text as a control token.

Training policy. The names are render.py's, so a config means the same for every family:
- A trained assistant message trains everything the model generates in its turn: reasoning ([THINK] ...
  [/THINK]), content and tool calls (from the first [TOOL_CALLS] on). train_on_reasoning: false leaves out the
  thinking text (the [THINK] markers stay, as a template's <think> tags do); train_on_tool_calls: false leaves
  out the calls. Its </s> is trained according to train_on_eos: turn = the </s> of trained turns; last = only
  the </s> of the last trained message; all = every assistant turn's </s>; none = no </s>.
- A trained user, system or tool message (roles_to_train) trains its content tokens, without the [INST]/[/INST],
  [SYSTEM_PROMPT], [AVAILABLE_TOOLS] block or [TOOL_RESULTS] markers (v7-v11: nor the call id before
  [TOOL_CONTENT]; v2/v3 results are mistral-common's JSON around the content, trained whole). Tool results are
  not trained by default. Only assistant turns have an end-of-turn token here. Messages that mistral-common
  merges into one turn (a run of one role; before v7, the system prompt and the user turn that carries it)
  must have the same train flag. Otherwise the row is quarantined (content_not_rendered).
- train_on_inputs trains every token but the first.
Not supported yet (the row is quarantined with a message that says so): training detail (character
offsets inside a message, message_field_training_detail, content parts), and trained user/system messages
with a v1 tokenizer, whose [INST] is plain text and cannot be told apart from the content.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dataprep.formats import Chat, RowError
from schemas.reasons import Reason
from schemas.shard import IGNORE_INDEX

# The control tokens that bound what a turn trains, besides the leading and trailing ones.
MARKERS = ("[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_CALLS]", "[TOOL_CONTENT]", "[THINK]", "[/THINK]")


@dataclass(frozen=True, slots=True)
class Markers:
    """One Mistral tokenizer's control tokens, as the labelling needs them."""

    eos_id: int
    special: np.ndarray  # bool per id: True for a control token
    ids: dict[str, int | None]  # the id of each of MARKERS; None where the tokenizer has no such token


@dataclass(slots=True)
class Turn:
    """One normalised message as mistral-common encodes it: ids[start:end] of the whole sequence."""

    role: str  # user | assistant | system | tool
    members: list[int]  # indices of the Chat messages it holds ([] for the empty user turn mistral-common adds)
    start: int
    end: int
    # What a trained turn trains, as token ranges: an assistant turn everything the model generates but its
    # </s> (reasoning and tool calls as the chat's options say); other turns their content, markers excluded.
    trained: list[tuple[int, int]]
    eos: int | None  # position of the turn's </s> (assistant turns)


def build_turn(role: str, members: list[int], start: int, toks: list[int], chat: Chat, markers: Markers) -> Turn:
    """The Turn of one normalised message whose token list `toks` starts at `start` in the whole sequence."""
    eos = start + len(toks) - 1 if role == "assistant" and toks and toks[-1] == markers.eos_id else None
    ranges = assistant_ranges(chat, toks, markers) if role == "assistant" else [content_range(toks, markers)]
    trained = [(start + a, start + b) for a, b in ranges if b > a]
    return Turn(role, members, start, start + len(toks), trained, eos)


def turn_labels(chat: Chat, ids: np.ndarray, turns: list[Turn], train_on_eos: str, train_on_inputs: bool,
                version: str) -> np.ndarray:
    """int32 labels for `ids`: the id where trained, -100 elsewhere, and labels[0] always -100. `version` is the
    tokenizer's ("v1", "v3", ...). Raises RowError (content_not_rendered) for a turn that cannot be trained as
    the row asks."""
    if train_on_inputs:
        out = ids.copy()
    else:
        out = np.full(len(ids), IGNORE_INDEX, dtype=np.int32)
        last_trained = max((i for i, t in enumerate(chat.train) if t), default=-1)
        for t in turns:
            trained = _turn_trained(chat, t, version)
            if trained:
                for a, b in t.trained:
                    out[a:b] = ids[a:b]
            wanted = (train_on_eos == "all" or (train_on_eos == "turn" and trained)
                      or (train_on_eos == "last" and last_trained in t.members))
            if t.eos is not None and wanted:
                out[t.eos] = ids[t.eos]
    out[0] = IGNORE_INDEX
    return out


def check_detail(chat: Chat) -> None:
    for i, ranges in enumerate(chat.detail):
        if ranges:
            raise RowError(Reason.bad_training_detail, f"message {i} has training detail (character offsets), which "
                           "mistral: tokenizers do not support yet; train whole messages (message_field_training) "
                           "instead", f"messages[{i}]")
    if chat.reasoning_detail is not None and any(chat.reasoning_detail):
        i = next(i for i, r in enumerate(chat.reasoning_detail) if r)
        raise RowError(Reason.bad_training_detail, f"message {i} has training detail (content parts) in its "
                       "reasoning, which mistral: tokenizers do not support yet; train whole messages instead",
                       f"messages[{i}]")


def _turn_trained(chat: Chat, turn: Turn, version: str) -> bool:
    flags = {chat.train[i] for i in turn.members}
    if len(flags) > 1:
        names = ", ".join(f"{i} ({chat.messages[i]['role']})" for i in turn.members)
        raise RowError(Reason.content_not_rendered, f"mistral-common {version} encodes messages {names} "
                       "as one turn, so they cannot be trained differently; train all of them or none",
                       f"messages[{turn.members[0]}]")
    trained = flags == {True}
    if trained and turn.role != "assistant" and version == "v1":
        raise RowError(Reason.content_not_rendered, f"message {turn.members[0]} ({turn.role}) is trained, but a v1 "
                       "Mistral tokenizer writes [INST] as plain text, so its content cannot be separated; "
                       "train assistant messages only or set train_on_inputs", f"messages[{turn.members[0]}]")
    return trained


def content_range(toks: list[int], markers: Markers) -> tuple[int, int]:
    """A user, system or tool turn's content: between its leading and trailing control tokens, after the
    tool definitions a user turn may carry ([AVAILABLE_TOOLS] ... [/AVAILABLE_TOOLS]) and the call id a v7
    tool result starts with ([TOOL_RESULTS] id [TOOL_CONTENT]). v2/v3 tool results are JSON written by
    mistral-common ({"content": ..., "call_id": ...}): their content cannot be separated from it, so a
    trained tool result trains that whole JSON."""
    a, b = 0, len(toks)
    for opener in ("[/AVAILABLE_TOOLS]", "[TOOL_CONTENT]"):
        marker = markers.ids[opener]
        if marker is not None and marker in toks:
            a = toks.index(marker) + 1
    while a < b and markers.special[toks[a]]:
        a += 1
    while b > a and markers.special[toks[b - 1]]:
        b -= 1
    return a, b


def assistant_ranges(chat: Chat, toks: list[int], markers: Markers) -> list[tuple[int, int]]:
    """Everything the model generates in an assistant turn but its </s>: reasoning ([THINK] ... [/THINK]),
    content and tool calls (from the first [TOOL_CALLS] on). train_on_reasoning false leaves out the thinking
    text (the [THINK] markers stay trained, as a template's <think> tags do); train_on_tool_calls false
    leaves out the tool calls."""
    end = len(toks) - 1 if toks and toks[-1] == markers.eos_id else len(toks)
    ranges = [(0, end)]
    calls = markers.ids["[TOOL_CALLS]"]
    if not chat.train_tool_calls and calls is not None and calls in toks[:end]:
        ranges = [(0, toks.index(calls))]
    think, unthink = markers.ids["[THINK]"], markers.ids["[/THINK]"]
    if not chat.train_reasoning and think is not None and think in toks[:end]:
        a = toks.index(think) + 1
        b = toks.index(unthink) if unthink in toks[a:end] else end
        ranges = [r for x, y in ranges for r in ((x, min(y, a)), (max(x, b), y)) if r[1] > r[0]]
    return ranges
