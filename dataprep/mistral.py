"""Mistral chat data, encoded by mistral-common itself: the encoder vLLM serves Mistral models with.

Why not a Hugging Face tokenizer plus a chat template, as for the other families: the HF conversions of
Mistral's tokenizers are not exact (transformers 5.23 against mistral-common 1.13.1, pinned in
tests/golden/test_mistral.py). The SentencePiece v1-v7 conversions split runs of spaces differently
('Hi  there' -> '▁Hi','▁▁','there' where mistral-common has '▁Hi','▁','▁there'), and the SentencePiece and
tekken conversions both turn '[INST]' or '</s>' typed by a user into control tokens, where mistral-common
keeps them as text. The Jinja templates that mistral-common generates for the HF route differ as well: they
keep trailing spaces of answers that mistral-common strips, for example. A model trained on HF-route ids
and served by vLLM would see other ids for the same conversation. So with `tokenizer_config: mistral:<name>`
the ids come from `MistralTokenizer.encode_chat_completion`, and the labels from the same encoder's
per-message structure.

Where the labels come from. mistral-common's instruct tokenizer encodes a conversation as BOS followed by
one token list per normalised message (`InstructTokenizerBase.encode_instruct`). `_message_tokens` calls
the same public per-message encoders (`encode_user_message`, `encode_assistant_message`,
`encode_system_message`) on the same validated, normalised request, and every row checks that BOS plus
their concatenation equals `encode_chat_completion(...).tokens`. A mismatch (a mistral-common release that
encodes differently) stops the run instead of mislabelling data. Nothing is re-encoded as prefixes. Within
one message's list, the content is what lies between the leading and trailing control tokens
([INST] ... [/INST], [SYSTEM_PROMPT] ... [/SYSTEM_PROMPT], ... </s>), because mistral-common never encodes
text as a control token.

What mistral-common does to a conversation, so what is trained is what it encodes, not the raw content:
- Validation runs in `ValidationMode.finetuning`, as mistral-finetune's does: the conversation must end with
  an assistant turn (other rows are quarantined as template_error), and each assistant turn is its content
  plus </s>, whether it is the last turn or not. The default test/serving mode rejects a final assistant
  turn unless it has `prefix=True` (`continue_final_message`), and that encodes an unfinished turn without
  </s>, for generation.
- Assistant content loses trailing spaces (`content.rstrip(" ")`, v2 and later). Tabs and newlines stay.
- Consecutive messages with the same role become one turn, joined by "\\n\\n".
- Before v7, system messages are joined with "\\n\\n" and put in front of the LAST user turn (v1: the
  first) as "[INST] {system}\\n\\n{user}[/INST]", and empty ones are dropped. From v7 on, each system message
  is its own [SYSTEM_PROMPT]...[/SYSTEM_PROMPT] block where it stands, even an empty one.
- Before v7, a conversation that does not start with a user turn gets an empty [INST][/INST] first.
- SentencePiece puts its dummy-prefix '▁' in front of every piece of text it encodes ('[INST]▁Hi').

Training policy. The names are render.py's, so a config means the same for every family:
- A trained assistant message trains its content tokens. Its </s> is trained according to train_on_eos:
  turn = the </s> of trained turns; last = only the </s> of the last trained message; all = every
  assistant turn's </s>; none = no </s>.
- A trained user or system message trains its content tokens, without the [INST]/[/INST] or
  [SYSTEM_PROMPT] markers. Only assistant turns have an end-of-turn token here. Messages that mistral-common
  merges into one turn (a run of one role; before v7, the system prompt and the user turn that carries it)
  must have the same train flag. Otherwise the row is quarantined (content_not_rendered).
- train_on_inputs trains every token but the first.
Not supported yet (the row is quarantined with a message that says so): training detail (character
offsets inside a message, message_field_training_detail), tool messages, and trained user/system messages
with a v1 tokenizer, whose [INST] is plain text and cannot be told apart from the content.

Run `python -m dataprep.mistral --write-templates` to regenerate dataprep/templates/mistral-*.jinja from the
installed mistral-common (the Jinja templates that mistral-common generates for these tokenizers; they are
the HF route for serving, and the golden tests compare that route with this encoder).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mistral_common
import numpy as np
from mistral_common.exceptions import MistralCommonException
from mistral_common.integrations.chat_templates.chat_templates import convert_tokenizer_to_chat_template
from mistral_common.protocol.instruct.messages import AssistantMessage, SystemMessage, ToolMessage, UserMessage
from mistral_common.protocol.instruct.normalize import get_normalizer
from mistral_common.protocol.instruct.request import InstructRequest
from mistral_common.protocol.instruct.validator import ValidationMode, get_validator
from mistral_common.tokens.tokenizers.base import SpecialTokenPolicy, TokenizerVersion
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer
from mistral_common.tokens.tokenizers.sentencepiece import get_spm_version, is_sentencepiece
from mistral_common.tokens.tokenizers.tekken import is_tekken
from mistral_common.tokens.tokenizers.utils import get_one_valid_tokenizer_file
from tokenizers import Tokenizer

from dataprep.chat_encoder import Encoded
from dataprep.encode import TokenizerInfo
from dataprep.formats import Chat, RowError
from dataprep.hf_tokenizer import TokenizerError
from dataprep.mistral_request import NULL_ID, build_request, groups
from dataprep.probes import PROBE_MESSAGES, ProbeError
from schemas.reasons import Reason
from schemas.shard import IGNORE_INDEX

if TYPE_CHECKING:
    from schemas.config import Config, DatasetConfig

PREFIX = "mistral:"
SHIPPED_DIR = Path(mistral_common.__file__).parent / "data"
MISTRAL_COMMON_VERSION = mistral_common.__version__

# Library template name -> the shipped tokenizer file it is generated from. tekken_240911 (Pixtral-style, with
# an image config) and tekken_240718 (NeMo) share one vocabulary. The 240911 template only adds branches for
# image chunks, which Tessera's text rows never reach.
TEMPLATE_SOURCES = {
    "mistral-v3": "mistral_instruct_tokenizer_240323.model.v3",  # SentencePiece v3 (Mistral 7B v0.3, Mixtral 8x22B)
    "mistral-v7": "mistral_instruct_tokenizer_241114.model.v7",  # SentencePiece v7 (Mistral Large 2411)
    "mistral-tekken": "tekken_240911.json",  # tekken v3 (NeMo, Pixtral)
}
TEMPLATES_DIR = Path(__file__).parent / "templates"


def is_mistral_tokenizer(name: str | None) -> bool:
    """True for `tokenizer_config: mistral:<name>`: the rows are encoded by mistral-common, not by an HF
    tokenizer plus a chat template. A folder with tekken.json is not detected by itself, because HF repos of
    Mistral models hold both tokenizer.json and tekken.json. The prefix is the user's choice of route."""
    return name is not None and name.startswith(PREFIX)


def shipped_tokenizers() -> list[str]:
    """The tokenizer files inside the mistral-common wheel (v1, v2, v3, v7, v7m1, tekken 240718/240911)."""
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if is_tekken(p) or is_sentencepiece(p))


def resolve_mistral_tokenizer(name: str, config_dir: Path) -> Path:
    """The mistral-common tokenizer file for `mistral:<name>`. <name> is a file shipped with mistral-common
    (`tekken_240911.json`, `mistral_instruct_tokenizer_240323.model.v3`, ...), a tokenizer file
    (`tekken*.json`, `*.model.v<N>`), or a folder that holds one (`tekken.json` or `tokenizer.model.v<N>`, as
    in Mistral's HF repos). Relative paths are tried against the config's folder first, then the working
    directory."""
    rest = name.removeprefix(PREFIX)
    shipped = shipped_tokenizers()
    if rest in shipped:
        return SHIPPED_DIR / rest
    hint = (f"use mistral:<file> with one of mistral-common {MISTRAL_COMMON_VERSION}'s files "
            f"({', '.join(shipped)}), or mistral:<path> to a folder with tekken.json or tokenizer.model.v<N>")
    if not rest:
        raise TokenizerError(f"tokenizer_config '{name}' names no tokenizer: {hint}")
    path = Path(rest).expanduser()
    candidates = [path] if path.is_absolute() else [config_dir / path, path]
    for p in candidates:
        if p.is_file():
            # mistral-common picks the tokenizer class and version from the file name alone.
            if is_tekken(p) or is_sentencepiece(p):
                return p.resolve()
            raise TokenizerError(f"tokenizer_config '{name}': {p} is not a mistral-common tokenizer file (it reads "
                                 "tekken*.json and *.model.v<N>, the version taken from the name)")
        if p.is_dir():
            try:
                # mistral-common's own rule: tekken.json wins, else the last SentencePiece file by name.
                return (p / get_one_valid_tokenizer_file(sorted(os.listdir(p)))).resolve()
            except ValueError:
                raise TokenizerError(f"tokenizer_config '{name}': {p} holds no tekken.json or tokenizer.model.v<N>; "
                                     f"{hint}") from None
    raise TokenizerError(f"tokenizer_config '{name}': {' or '.join(str(c) for c in candidates)} not found; {hint}")


@dataclass(slots=True)
class _Turn:
    """One normalised message as mistral-common encodes it: ids[start:end] of the whole sequence."""

    role: str  # user | assistant | system | tool
    members: list[int]  # indices of the Chat messages it holds ([] for the empty user turn mistral-common adds)
    start: int
    end: int
    # What a trained turn trains, as token ranges: an assistant turn everything the model generates but its
    # </s> (reasoning and tool calls as the chat's options say); other turns their content, markers excluded.
    trained: list[tuple[int, int]]
    eos: int | None  # position of the turn's </s> (assistant turns)


class MistralChatEncoder:
    """Chat -> (input_ids, labels) with mistral-common's `encode_chat_completion` (see the module docstring).

    Holds one `MistralTokenizer` (loads in ~0.1 s for SentencePiece, ~2 s for tekken), so build one per worker
    process. Encoding takes ~1 ms for a short conversation, about half of it the reference call.
    `encode` raises RowError for rows that cannot be encoded or labelled. It raises RuntimeError when
    mistral-common's per-message encodings do not add up to its own `encode_chat_completion`, because that
    is a change in mistral-common, not a problem with the row."""

    def __init__(self, source: str, config_dir: Path):
        self.source = source
        self.path = resolve_mistral_tokenizer(source, config_dir)
        self.tokenizer = MistralTokenizer.from_file(str(self.path), mode=ValidationMode.finetuning)
        self.version: TokenizerVersion = self.tokenizer.version
        self._instruct: Any = self.tokenizer.instruct_tokenizer  # InstructTokenizerV1..V15
        self._text = self._instruct.tokenizer  # SentencePieceTokenizer | Tekkenizer
        # The same validator and normaliser that `MistralTokenizer.from_file` builds for `encode_chat_completion`.
        self._validator = get_validator(self.version, mode=ValidationMode.finetuning)
        self._normalizer = get_normalizer(self.version, self._text.model_settings_builder)
        self.bos_id: int = self._text.bos_id
        self.eos_id: int = self._text.eos_id
        self.vocab_size: int = self._text.n_words
        self._special = np.zeros(self.vocab_size, dtype=bool)
        self._special[list(self._text.special_ids)] = True
        markers = ("[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_CALLS]", "[TOOL_CONTENT]", "[THINK]", "[/THINK]")
        self._ids = {name: self._special_id(name) for name in markers}
        # mistral-common encodes a ThinkChunk only from v13 on, and only with [THINK]/[/THINK] in the vocabulary.
        self.can_think = getattr(self._instruct, "BEGIN_THINK", None) is not None

    def _special_id(self, name: str) -> int | None:
        try:
            return int(self._text.get_special_token(name))
        except Exception:  # v1 and SentencePiece files without the token raise (which error depends on the kind)
            return None

    @property
    def kind(self) -> str:
        return "tekken" if is_tekken(self.path) else "sentencepiece"

    @property
    def name(self) -> str:
        """The template name in the report and the manifest."""
        return f"mistral-common {self.version.value} ({self.kind})"

    def encoder(self, cfg: Config, ds: DatasetConfig) -> MistralEncoder:
        return MistralEncoder(self, ds, cfg.train_on_inputs)

    def save(self, folder: Path, vocabulary: Tokenizer) -> dict[str, str]:
        folder.mkdir(parents=True)
        vocabulary.save(str(folder / "tokenizer.json"))  # the vocabulary, for tessera query/inspect
        return save_tokenizer_files(self.path, folder)

    def decode(self, ids: list[int] | np.ndarray, keep_special: bool = False) -> str:
        policy = SpecialTokenPolicy.KEEP if keep_special else SpecialTokenPolicy.IGNORE
        return str(self._text.decode([int(i) for i in ids], special_token_policy=policy))

    def pieces(self, ids: list[int] | np.ndarray) -> list[str]:
        return [self._text.id_to_piece(int(i)) for i in ids]

    def reference_ids(self, chat: Chat) -> list[int]:
        """`MistralTokenizer.encode_chat_completion` for this conversation: the ids vLLM sees."""
        request = build_request(chat, self.version, self.can_think)
        return list(self.tokenizer.encode_chat_completion(request).tokens)

    def encode(self, chat: Chat, train_on_eos: str, train_on_inputs: bool) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, labels), both int32. input_ids are exactly `encode_chat_completion(...).tokens`; labels
        are the id where trained and -100 elsewhere, and labels[0] is always -100. Raises RowError
        (template_error, content_not_rendered, bad_training_detail) for rows it cannot encode or label."""
        _check_detail(chat)
        reference, turns = self._turns(chat)
        ids = np.asarray(reference, dtype=np.int32)
        if train_on_inputs:
            labels = ids.copy()
        else:
            labels = np.full(len(ids), IGNORE_INDEX, dtype=np.int32)
            last_trained = max((i for i, t in enumerate(chat.train) if t), default=-1)
            for turn in turns:
                trained = self._turn_trained(chat, turn)
                if trained:
                    for a, b in turn.trained:
                        labels[a:b] = ids[a:b]
                wanted = (train_on_eos == "all" or (train_on_eos == "turn" and trained)
                          or (train_on_eos == "last" and last_trained in turn.members))
                if turn.eos is not None and wanted:
                    labels[turn.eos] = ids[turn.eos]
        labels[0] = IGNORE_INDEX
        return ids, labels

    def _turn_trained(self, chat: Chat, turn: _Turn) -> bool:
        flags = {chat.train[i] for i in turn.members}
        if len(flags) > 1:
            names = ", ".join(f"{i} ({chat.messages[i]['role']})" for i in turn.members)
            raise RowError(Reason.content_not_rendered, f"mistral-common {self.version.value} encodes messages {names} "
                           "as one turn, so they cannot be trained differently; train all of them or none",
                           f"messages[{turn.members[0]}]")
        trained = flags == {True}
        if trained and turn.role != "assistant" and self.version == TokenizerVersion.v1:
            raise RowError(Reason.content_not_rendered, f"message {turn.members[0]} ({turn.role}) is trained, but a v1 "
                           "Mistral tokenizer writes [INST] as plain text, so its content cannot be separated; "
                           "train assistant messages only or set train_on_inputs", f"messages[{turn.members[0]}]")
        return trained

    def _turns(self, chat: Chat) -> tuple[list[int], list[_Turn]]:
        request = build_request(chat, self.version, self.can_think)
        try:
            reference = list(self.tokenizer.encode_chat_completion(request).tokens)
            instruct = self._normalizer.from_chat_completion_request(self._validator.validate_request(request))
            per_message = self._message_tokens(instruct)
        except (MistralCommonException, ValueError, AssertionError) as e:
            # mistral-common validates with ValueError (pydantic) and asserts as well as its own exceptions.
            message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise RowError(Reason.template_error, f"mistral-common {MISTRAL_COMMON_VERSION} rejected the "
                           f"conversation: {message}") from None
        turn_groups = groups(chat, self.version)
        # The grouping is checked against the normaliser's output: the roles, each turn's text as the join of its
        # members' contents (empty contents are skipped, as mistral-common skips them; an assistant turn with
        # reasoning holds chunks instead), the tool call ids of assistant turns and the id each tool result answers.
        got = [_signature(m) for m in instruct.messages]
        expected = [_expected_signature(chat, role, members) for role, members in turn_groups]
        if got != expected or reference[:1] != [self.bos_id]:
            pairs = zip(got, expected, strict=False)
            k = next((k for k, (g, e) in enumerate(pairs) if g != e), min(len(got), len(expected)))
            raise RuntimeError(f"mistral-common {MISTRAL_COMMON_VERSION} normalised the conversation into "
                               f"{len(got)} turns, dataprep/mistral.py expected {len(expected)}; first difference at "
                               f"turn {k}: {str(got[k:k + 1])[:200]} vs {str(expected[k:k + 1])[:200]}; update _groups")
        turns, pos = [], 1
        for (role, members), toks in zip(turn_groups, per_message, strict=True):
            eos = pos + len(toks) - 1 if role == "assistant" and toks and toks[-1] == self.eos_id else None
            ranges = self._assistant_ranges(chat, toks) if role == "assistant" else [self._content_range(toks)]
            trained = [(pos + a, pos + b) for a, b in ranges if b > a]
            turns.append(_Turn(role, members, pos, pos + len(toks), trained, eos))
            pos += len(toks)
        if [self.bos_id, *(t for toks in per_message for t in toks)] != reference:
            raise RuntimeError(f"mistral-common {MISTRAL_COMMON_VERSION}: BOS + the per-message encodings differ from "
                               "encode_chat_completion; its encode_instruct changed, update _message_tokens")
        return reference, turns

    def _message_tokens(self, request: InstructRequest[Any, Any]) -> list[list[int]]:
        """One token list per normalised message, made the way `InstructTokenizerBase.encode_instruct` makes
        them (the caller checks that they add up to `encode_chat_completion`)."""
        first_user, last_user = self._instruct.find_first_last_user(request)
        out = []
        for idx, msg in enumerate(request.messages):
            if isinstance(msg, UserMessage):
                toks, _, _ = self._instruct.encode_user_message(
                    msg, request.available_tools, idx == last_user, idx == first_user,
                    system_prompt=request.system_prompt, force_img_first=True, settings=request.settings)
            elif isinstance(msg, AssistantMessage):
                toks = self._instruct.encode_assistant_message(message=msg, is_before_last_user_message=idx < last_user)
            elif isinstance(msg, SystemMessage):
                toks, _ = self._instruct.encode_system_message(msg)
            elif isinstance(msg, ToolMessage):
                toks, _, _ = self._instruct.encode_tool_message(msg, idx < last_user)
            else:
                raise RuntimeError(f"mistral-common {MISTRAL_COMMON_VERSION} normalised a message into a "
                                   f"{type(msg).__name__}, which dataprep/mistral.py does not know")
            out.append(list(toks))
        return out

    def _content_range(self, toks: list[int]) -> tuple[int, int]:
        """A user, system or tool turn's content: between its leading and trailing control tokens, after the
        tool definitions a user turn may carry ([AVAILABLE_TOOLS] ... [/AVAILABLE_TOOLS]) and the call id a v7
        tool result starts with ([TOOL_RESULTS] id [TOOL_CONTENT]). v2/v3 tool results are JSON written by
        mistral-common ({"content": ..., "call_id": ...}): their content cannot be separated from it, so a
        trained tool result trains that whole JSON."""
        a, b = 0, len(toks)
        for opener in ("[/AVAILABLE_TOOLS]", "[TOOL_CONTENT]"):
            marker = self._ids[opener]
            if marker is not None and marker in toks:
                a = toks.index(marker) + 1
        while a < b and self._special[toks[a]]:
            a += 1
        while b > a and self._special[toks[b - 1]]:
            b -= 1
        return a, b

    def _assistant_ranges(self, chat: Chat, toks: list[int]) -> list[tuple[int, int]]:
        """Everything the model generates in an assistant turn but its </s>: reasoning ([THINK] ... [/THINK]),
        content and tool calls (from the first [TOOL_CALLS] on). train_on_reasoning false leaves out the thinking
        text (the [THINK] markers stay trained, as a template's <think> tags do); train_on_tool_calls false
        leaves out the tool calls."""
        end = len(toks) - 1 if toks and toks[-1] == self.eos_id else len(toks)
        ranges = [(0, end)]
        calls = self._ids["[TOOL_CALLS]"]
        if not chat.train_tool_calls and calls is not None and calls in toks[:end]:
            ranges = [(0, toks.index(calls))]
        think, unthink = self._ids["[THINK]"], self._ids["[/THINK]"]
        if not chat.train_reasoning and think is not None and think in toks[:end]:
            a = toks.index(think) + 1
            b = toks.index(unthink) if unthink in toks[a:end] else end
            ranges = [r for x, y in ranges for r in ((x, min(y, a)), (max(x, b), y)) if r[1] > r[0]]
        return ranges


class MistralEncoder:
    """chat_encoder.ChatEncoder for one dataset: MistralChatEncoder with the dataset's training options."""

    def __init__(self, base: MistralChatEncoder, ds: DatasetConfig, train_on_inputs: bool):
        self.base, self.ds, self.train_on_inputs = base, ds, train_on_inputs
        self.train_on_eos, self.roles_to_train = ds.train_on_eos, ds.roles_to_train
        self.name = base.name

    def encode(self, chats: Sequence[Chat]) -> list[Encoded | RowError]:
        out: list[Encoded | RowError] = []
        for chat in chats:
            try:
                out.append(self.base.encode(chat, self.train_on_eos, self.train_on_inputs))
            except RowError as e:
                out.append(e)
        return out

    def probe(self, where: str) -> dict[str, Any]:
        """A plain conversation trains something, and the </s> of its assistant turns as train_on_eos says."""
        messages = PROBE_MESSAGES[1:]
        chat = Chat([dict(m) for m in messages], [m["role"] in self.roles_to_train for m in messages],
                    [None] * len(messages))
        ids, labels = self.base.encode(chat, self.train_on_eos, False)
        if not (labels != IGNORE_INDEX).any():
            raise ProbeError(f"{where}: with roles_to_train {self.roles_to_train}, a plain conversation has no "
                             "trained token")
        eos_trained = int((labels == self.base.eos_id).sum())
        wanted = {"turn": 2, "all": 2, "last": 1, "none": 0}[self.train_on_eos] if "assistant" in self.roles_to_train \
            else 0
        if eos_trained < wanted:
            raise ProbeError(f"{where}: {self.name} did not train the </s> of the assistant turns")
        if ids[:2].tolist() == [self.base.bos_id] * 2:
            raise ProbeError(f"{where}: {self.name} produces a double BOS")
        eos = self.base.pieces([self.base.eos_id])[0]
        return {"dataset": self.ds.path, "format": "chat_template", "template": self.name, "prefix_preserving": None,
                "end_of_turn": [eos] if wanted else [], "generation_prompt": ""}


def load_mistral_tokenizer(name: str, config_dir: Path, special_tokens: dict[str, str | None] | None = None,
                           extra_tokens: list[str] | None = None) -> TokenizerInfo:
    """TokenizerInfo for `tokenizer_config: mistral:<name>`: conversations are encoded by mistral-common
    (`chat_encoding`), and transformers' conversion of the same vocabulary (ids and pieces agree with
    mistral-common; its tokenization of some texts does not, which is why chats are not encoded with it) gives
    the vocabulary size, the checks of pre-tokenized rows and the `vocab` view of `tessera query`."""
    if (special_tokens and any(special_tokens.values())) or extra_tokens:
        raise TokenizerError(f"tokenizer '{name}': special_tokens and tokens cannot change a mistral-common "
                             "tokenizer; remove them")
    enc = MistralChatEncoder(name, config_dir)
    tok = hf_conversion(enc.path)
    bos, eos = enc.pieces([enc.bos_id, enc.eos_id])
    specials = [t.content for t in tok.get_added_tokens_decoder().values() if t.special]
    files = {enc.path.name: hashlib.sha256(enc.path.read_bytes()).hexdigest(), "mistral-common": enc.version.value}
    return TokenizerInfo(enc.path, tok, True, eos, {"bos_token": bos, "eos_token": eos}, specials, None, files,
                         chat_encoding=enc)


def _messages(chat: Chat) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": m["content"]} for m in chat.messages]


def _check_detail(chat: Chat) -> None:
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


def _signature(message: Any) -> tuple[str, Any, Any]:
    """(role, text or None when it is chunks, tool call ids or the answered id) of a normalised message."""
    content = message.content if isinstance(message.content, str) else None
    if isinstance(message, AssistantMessage):
        return "assistant", content, [c.id for c in message.tool_calls or []]
    if isinstance(message, ToolMessage):
        return "tool", None, message.tool_call_id  # v2/v3 rewrite JSON results (json.loads + dumps)
    return str(message.role), content, None  # Roles is a StrEnum


def _expected_signature(chat: Chat, role: str, members: list[int]) -> tuple[str, Any, Any]:
    messages = [chat.messages[i] for i in members]
    text: str | None = "\n\n".join(c for m in messages if m["role"] == role and (c := m.get("content")))
    if role == "assistant":
        if any(chat.reasoning_key(i) is not None for i in members):
            text = None
        return role, text, [c.get("id") or NULL_ID for m in messages for c in m.get("tool_calls") or []]
    if role == "tool":
        return role, None, messages[0].get("tool_call_id")
    return role, text, None


def save_tokenizer_files(source: str | Path, folder: Path, config_dir: Path | None = None) -> dict[str, str]:
    """Copy the mistral-common tokenizer file into `folder` (the prepared dir's tokenizer/), named as in
    Mistral's HF repos (tekken.json, tokenizer.model.v<N>), so vLLM (`--tokenizer-mode mistral`) and
    mistral-common find it. Also write a tokenizer_config.json that makes `AutoTokenizer.from_pretrained(folder)`
    load transformers' `MistralCommonBackend`, offline. That backend wraps mistral-common and its
    `apply_chat_template` gives the ids trained here. The tested alternative fails offline: without the config,
    AutoTokenizer converts tekken.json to a plain HF tokenizer with no chat template, and it cannot load a
    SentencePiece folder at all. `source` is a `mistral:` name or a resolved path. The copy is byte for byte,
    so the manifest's hash matches the source's. Returns file name -> sha256."""
    path = source if isinstance(source, Path) else resolve_mistral_tokenizer(source, config_dir or Path.cwd())
    # SentencePiece: mistral-common reads the version from the name, so keep its '.model.v7m1'-like ending.
    name = "tekken.json" if is_tekken(path) else "tokenizer" + path.name[path.name.index(".model"):]
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, folder / name)
    config = {"tokenizer_class": "MistralCommonBackend"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def library_template(path: Path) -> str | None:
    """The template in dataprep/templates generated for this tokenizer file's kind and version, if any."""
    if is_tekken(path):  # the version is in the file's config, as mistral-common reads it
        version = json.loads(path.read_text(encoding="utf-8"))["config"]["version"]
        return "mistral-tekken" if version == TokenizerVersion.v3.value else None
    return {TokenizerVersion.v3: "mistral-v3", TokenizerVersion.v7: "mistral-v7"}.get(get_spm_version(path))


# ---- Jinja templates generated by mistral-common, and the HF route they belong to (used by the golden tests).


def generate_template(name: str) -> str:
    """The Jinja chat template that mistral-common generates for TEMPLATE_SOURCES[name], without provenance."""
    return convert_tokenizer_to_chat_template(SHIPPED_DIR / TEMPLATE_SOURCES[name], use_special_token_variables=False)


def provenance(name: str, date: datetime.date) -> str:
    """A leading Jinja comment. Under trim_blocks it renders to nothing, newline included (tested)."""
    return (f"{{# Provenance: generated by mistral-common {MISTRAL_COMMON_VERSION} "
            "integrations/chat_templates/template_generator.py (chat_templates.convert_tokenizer_to_chat_template("
            f"'{TEMPLATE_SOURCES[name]}', use_special_token_variables=False), which detects the version and "
            f"features from the file and calls build_chat_template) on {date.isoformat()}. #}}\n")


def write_templates(folder: Path = TEMPLATES_DIR, date: datetime.date | None = None) -> list[Path]:
    date = date or datetime.date.today()
    written = []
    for name in TEMPLATE_SOURCES:
        path = folder / f"{name}.jinja"
        path.write_text(provenance(name, date) + generate_template(name), encoding="utf-8")
        written.append(path)
    return written


def has_protobuf() -> bool:
    try:
        import google.protobuf  # noqa: F401
    except ImportError:
        return False
    return True


def hf_conversion(path: Path) -> Tokenizer:
    """transformers' own conversion of a Mistral tokenizer file to a `tokenizers.Tokenizer`, offline. This is
    what an HF-route user of the model gets. tekken: `convert_tekken_tokenizer`. SentencePiece: the
    LlamaTokenizer conversion that AutoTokenizer applies to a folder holding only tokenizer.model. That
    conversion reads the model with protobuf."""
    if is_tekken(path):
        from transformers.integrations.mistral import convert_tekken_tokenizer

        # chat_template="" skips mistral-common's template generation; only the vocabulary is wanted here.
        return convert_tekken_tokenizer(str(path), chat_template="").backend_tokenizer
    if not has_protobuf():
        raise ImportError("converting a SentencePiece model to an HF tokenizer needs protobuf (pip install protobuf); "
                          "without it transformers falls back to a tiktoken reader that cannot parse the file")
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copyfile(path, Path(tmp) / "tokenizer.model")
        config = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                  "legacy": False}
        (Path(tmp) / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
        return AutoTokenizer.from_pretrained(tmp).backend_tokenizer


@dataclass(slots=True)
class Disagreement:
    index: int  # which conversation
    position: int | None  # first token where the HF route differs (None: the template raised)
    mistral: list[str]  # mistral-common's pieces from there (a few)
    hf: list[str]  # the HF route's pieces from there
    text: str  # the template's rendering (or the error)


def reference_hf_disagreements(encoder: MistralChatEncoder, hf_tokenizer: Tokenizer, template_text: str,
                               chats: list[Chat], window: int = 6) -> list[Disagreement]:
    """Where the HF route (the template rendered the way render.py renders, then the HF tokenizer with
    add_special_tokens=False, as encode.py tokenizes) gives other ids than mistral-common, one entry per
    disagreeing conversation."""
    from dataprep.render import compile_template

    template = compile_template(template_text, datetime.date(2026, 1, 1))
    out = []
    for k, chat in enumerate(chats):
        ours = encoder.reference_ids(chat)
        try:
            text = template.render(messages=_messages(chat), add_generation_prompt=False, bos_token="<s>",
                                   eos_token="</s>")
        except Exception as e:  # the template is code: report any failure as a disagreement
            out.append(Disagreement(k, None, encoder.pieces(ours[:window]), [], f"{type(e).__name__}: {e}"))
            continue
        theirs = hf_tokenizer.encode(text, add_special_tokens=False).ids
        if theirs != ours:
            at = next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b),
                      min(len(ours), len(theirs)))
            hf_pieces = [str(hf_tokenizer.id_to_token(t)) for t in theirs[at:at + window]]
            out.append(Disagreement(k, at, encoder.pieces(ours[at:at + window]), hf_pieces, text))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-templates", action="store_true",
                        help=f"regenerate {', '.join(TEMPLATE_SOURCES)} in dataprep/templates from the installed "
                             "mistral-common")
    args = parser.parse_args(argv)
    if not args.write_templates:
        parser.print_help()
        return
    for path in write_templates():
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
