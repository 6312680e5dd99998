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
`encode_system_message`, `encode_tool_message`) on the same validated, normalised request, and every row
checks that BOS plus their concatenation equals `encode_chat_completion(...).tokens` and that the normalised
messages are the turns `mistral_request.groups` predicts. A mismatch (a mistral-common release that encodes
differently) raises RuntimeError, so the row is quarantined as row_error with that message instead of being
mislabelled. Nothing is re-encoded as prefixes (the golden reference does that, independently:
golden_refs.py). Which tokens of those lists a row trains, the training policy: mistral_labels.py.

Tool calls and reasoning: the request is built by mistral_request.py (Tool, ToolCall, ToolMessage, ThinkChunk,
exactly as `encode_chat_completion` expects them per version; rows a version cannot encode are quarantined
there with the field and the fix). What each version writes:
- v2: tools in the last user turn ([AVAILABLE_TOOLS] json [/AVAILABLE_TOOLS][INST]...); a call turn is
  [TOOL_CALLS] + a JSON list of {name, arguments}; a result [TOOL_RESULTS] {name, content} [/TOOL_RESULTS].
  Calls and results before the last user turn are not encoded at all (so not trained). One result per call turn.
- v3: calls carry their id (9 letters or digits), results are {content, call_id}; history is kept.
- v7: content and calls may share a message; results are [TOOL_RESULTS] id [TOOL_CONTENT] content [/TOOL_RESULTS].
- v11: each call is [TOOL_CALLS] name [CALL_ID] id [ARGS] arguments.
- v13: tools in the first user turn, calls without ids ([TOOL_CALLS] name [ARGS] arguments), results
  [TOOL_RESULTS] content [/TOOL_RESULTS] ordered as the calls; reasoning as [THINK] text [/THINK] before the
  content (a ThinkChunk; the only version whose tokenizers can have [THINK]).

What mistral-common does to a conversation, so what is trained is what it encodes, not the raw content:
- Validation runs in `ValidationMode.finetuning`, as mistral-finetune's does: the conversation must end with
  an assistant turn (other rows are quarantined as template_error), and each assistant turn is its content
  plus </s>, whether it is the last turn or not. The default test/serving mode rejects a final assistant
  turn unless it has `prefix=True` (`continue_final_message`), and that encodes an unfinished turn without
  </s>, for generation.
- Assistant content loses trailing spaces (`content.rstrip(" ")`, v2 and later). Tabs and newlines stay.
- Consecutive user or assistant messages become one turn, joined by "\\n\\n"; tool results stay one each.
- Before v7, system messages are joined with "\\n\\n" and put in front of the LAST user turn (v1: the
  first) as "[INST] {system}\\n\\n{user}[/INST]", and empty ones are dropped. From v7 on, each system message
  is its own [SYSTEM_PROMPT]...[/SYSTEM_PROMPT] block where it stands, even an empty one.
- Before v7, a conversation that does not start with a user turn gets an empty [INST][/INST] first.
- SentencePiece puts its dummy-prefix '▁' in front of every piece of text it encodes ('[INST]▁Hi').

The HF route for these models (the Jinja templates mistral-common generates, transformers' conversion of the
tokenizer file) and where it disagrees with this encoder: dataprep/mistral_templates.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from mistral_common.exceptions import MistralCommonException
from mistral_common.protocol.instruct.messages import AssistantMessage, SystemMessage, ToolMessage, UserMessage
from mistral_common.protocol.instruct.normalize import get_normalizer
from mistral_common.protocol.instruct.request import InstructRequest
from mistral_common.protocol.instruct.validator import ValidationMode, get_validator
from mistral_common.tokens.tokenizers.base import SpecialTokenPolicy, TokenizerVersion
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer
from mistral_common.tokens.tokenizers.tekken import is_tekken
from tokenizers import Tokenizer

from dataprep.chat_encoder import Encoded
from dataprep.encode import TokenizerInfo
from dataprep.formats import Chat, RowError
from dataprep.hf_tokenizer import TokenizerError
from dataprep.mistral_files import (
    MISTRAL_COMMON_VERSION,
    hf_conversion,
    resolve_mistral_tokenizer,
    save_tokenizer_files,
)
from dataprep.mistral_labels import MARKERS, Markers, Turn, build_turn, check_detail, turn_labels
from dataprep.mistral_request import NULL_ID, build_request, groups
from dataprep.probes import PROBE_MESSAGES, ProbeError
from schemas.reasons import Reason
from schemas.shard import IGNORE_INDEX

if TYPE_CHECKING:
    from schemas.config import Config, DatasetConfig


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
        special = np.zeros(self.vocab_size, dtype=bool)
        special[list(self._text.special_ids)] = True
        self._markers = Markers(self.eos_id, special, {name: self._special_id(name) for name in MARKERS})
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
        check_detail(chat)
        reference, turns = self._turns(chat)
        ids = np.asarray(reference, dtype=np.int32)
        return ids, turn_labels(chat, ids, turns, train_on_eos, train_on_inputs, self.version.value)

    def _turns(self, chat: Chat) -> tuple[list[int], list[Turn]]:
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
            turns.append(build_turn(role, members, pos, toks, chat, self._markers))
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
