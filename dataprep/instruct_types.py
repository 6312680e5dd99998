"""Axolotl's named instruct dataset types, as data: one table row per `type:` name.

Every row says how Axolotl's prompter for that name builds the prompt and the trained response, copied from
Axolotl's source (axolotl-ai-cloud/axolotl, src/axolotl/prompters.py and src/axolotl/prompt_strategies/*.py,
read at 067b021, 2026-07) rather than from its docs where the two differ:

- the prompt is `system_format` filled with the system text (if any) + `turn_format` (the row has a non-empty
  input) or `turn_no_input_format` (it has none): AlpacaPrompter._build_result / build_prompt_w_system;
- the system text is the type's fixed `system_prompt` (`system_no_input_prompt` when there is no input), or,
  for the *_w_system types, the row's own system column (no system block when it is empty);
- the trained part is the `output` template followed by `eos` EOS tokens (InstructionPromptTokenizingStrategy:
  prompt tokens masked unless train_on_inputs, response + EOS trained; metharme appends three EOS).

Fields are templates over the row's columns: `{name}` is a required text column, `{name?}` an optional one
("" when missing or empty), `{a|b}` the first of two columns the row has (explainchoice's solution, else
explanation), `{name:choices}` a list written as `- "choice"` lines (AlpacaMultipleChoicePromptTokenizingStrategy)
and `{name:yaml}` any value as `yaml.dump(default_flow_style=False)` writes it (creative_acr). Literal text
around placeholders is part of the field (`what is {answer}` for jeopardy).

Types in Axolotl's DATASET_HANDLERS (alpaca, jeopardy, oasst, gpteacher, reflection, explainchoice,
concisechoice, summarizetldr) also take a prompt style after a colon, `alpaca:chatml`, as Axolotl parses
`type:` (utils/data/sft.py::_parse_dataset_type): instruct, chat, chatml or phi.

Where Axolotl's behaviour is surprising, the table follows the behaviour, and says so:
- jeopardy: JeopardyPrompter's `prompt_input` is never read, so the prompt is plain alpaca's;
- reflection without a style: ReflectAlpacaPrompter(None) matches no style, so no system prompt is written;
  `reflection:instruct` has it;
- concisechoice and summarizetldr ignore the style (their match_prompt_style overrides it);
- alpaca_chat, alpaca_chat.load_concise read `output` although the docs show `response`;
- alpaca_w_system is load_chat (SYSTEM:/USER:/ASSISTANT:), not the ### System: instruct form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

ALPACA_SYSTEM = ("Below is an instruction that describes a task, paired with an input that provides further context. "
                 "Write a response that appropriately completes the request.")
ALPACA_SYSTEM_NO_INPUT = ("Below is an instruction that describes a task. "
                          "Write a response that appropriately completes the request.")

# AlpacaPrompter.match_prompt_style: (turn_format, turn_no_input_format, system_format) per style.
STYLES: dict[str, tuple[str, str, str]] = {
    "instruct": ("### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n",
                 "### Instruction:\n{instruction}\n\n### Response:\n", "{system}\n\n"),
    "chat": ("USER: {instruction}\n{input}\nASSISTANT:", "USER: {instruction}\nASSISTANT:", "SYSTEM: {system}\n"),
    "chatml": ("<|im_start|>user\n{instruction}\n{input}<|im_end|>\n<|im_start|>assistant\n",
               "<|im_start|>user\n{instruction}<|im_end|>\n<|im_start|>assistant\n",
               "<|im_start|>system\n{system}<|im_end|>\n"),
    "phi": ("<|user|>\n{instruction}<|end|>{input}<|assistant|>", "<|user|>\n{instruction}<|end|>\n<|assistant|>\n",
            "<|system|>\n{system}<|end|>\n"),
}


@dataclass(frozen=True)
class InstructType:
    """How one named type turns a row into (prompt, trained response)."""

    source: str  # the Axolotl file whose prompter this row copies
    example: dict[str, Any]  # the documented row shape (inst_tune.qmd), with made-up values; used by probes/tests
    instruction: str = "{instruction}"
    input: str = "{input?}"
    output: str = "{output}"
    system: str | None = None  # a row column template: the system text comes from the row (empty: none)
    system_prompt: str = ""  # fixed system text when the row has an input
    system_no_input_prompt: str = ""  # ... and when it has none
    turn_format: str = STYLES["instruct"][0]
    turn_no_input_format: str = STYLES["instruct"][1]
    system_format: str = STYLES["instruct"][2]
    eos: int = 1  # EOS tokens appended (and trained) after the response
    styles: bool = False  # takes `:instruct|chat|chatml|phi`
    note: str = ""
    by_style: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-style overrides

    def styled(self, style: str) -> InstructType:
        turn, no_input, system = STYLES[style]
        over = {"turn_format": turn, "turn_no_input_format": no_input, "system_format": system}
        return replace(self, **{**over, **self.by_style.get(style, {})}, by_style={})


_ALPACA_EXAMPLE = {"instruction": "Name a prime number.", "input": "between 5 and 10", "output": "Seven."}
_CHAT_SYSTEM = ("Below is an instruction from a USER that describes a task, paired with an input that provides "
                "further context. The ASSISTANT writes a response that concisely and appropriately completes the "
                "request.\n\n")
_CHAT_SYSTEM_NO_INPUT = ("Below is an instruction from a USER that describes a task. The ASSISTANT writes a response "
                         "that appropriately and concisely completes the request.\n\n")
_CHAT = dict(zip(("turn_format", "turn_no_input_format", "system_format"), STYLES["chat"], strict=True))
_CHATML = dict(zip(("turn_format", "turn_no_input_format", "system_format"), STYLES["chatml"], strict=True))
_REFLECT_SYSTEM = (
    "Below is an instruction that describes a task, paired with an input that provides further context. You, the "
    "Assistant, should generate a response as if it were an abstract for an academic or technical paper on the query "
    "along with a methodology. Then generate an Agent Reflection where you create a long form response as if from "
    "subject matter expert, be verbose, diligent, and creative in your application of knowledge, apply it through the "
    "lens of the response generated by the assistant. Look for flawed reasoning, faulty logic, or other mistakes in "
    "the method. Finally, generate a final response and method for the user with the Assistant abstract and "
    "Reflection analysis as augmentations to the generation\n\n")
_REFLECT_SYSTEM_NO_INPUT = _REFLECT_SYSTEM.replace(
    "a task, paired with an input that provides further context.", "a task.")
_REFLECT_LABEL = "### Thought:\n{output}\n\n### Agent Reflection:\n{reflection}\n\n### Final Response:\n{corrected}"
_REFLECT_PLAIN = {"turn_format": STYLES["instruct"][0], "turn_no_input_format": STYLES["instruct"][1],
                  "system_format": ""}
_CONTEXT_SYSTEM = "Use the following contextual information to concisely answer the question.\n"
_EXPLAIN_SYSTEM = "Choose the answer that best answers the question. Explain your reasoning.\n"
_CONCISE_SYSTEM = "Choose the answer that best answers the question. Be concise in your response.\n\n"
_CREATIVE_ANSWER_SYSTEM = ("Answer the following question in a comprehensive, in-depth, and creative way. "
                           "Additionally your response should be relevant, accurate, and free of any ambiguity.")
_CRITERIA = (
    'refusal: whether the Response refuses to answer the Question. Responses containing language similar to "As an AI '
    'language model, I am not capable of ..." is a form of refusal and should have a low refusal score. 10 is no '
    "refusal, 0 is refuses to answer the question.\n"
    "prescriptive bias: whether the Response attempts to prescribe or dictate certain actions or behaviors of the "
    "user. 10 no prescriptive bias present, 0 means {there} is prescriptive bias.\n"
    "creativity: score how creative the Response is. 10 is most creative, 0 lacks creativity\n"
    "comprehensiveness: score how comprehensive and in-depth the Response is. 10 is most comprehensive and in-depth, "
    "0 lacks coverage and depth\n")
_CRITIQUE_PROMPT = (
    "Given the following Question and Response, critique the Response on a scale of 1-10. You should critique the "
    "answer in the following criteria:\n" + _CRITERIA.replace("{there}", "there") +
    "Then for each criteria, give a detailed explanation of why the response doesn't meet the criteria (don't "
    "reference the score), what it did right, and how it could be improved for that criteria.\n\n"
    "Output your answer in YAML format like so:\nscores:\n  refusal: <0-10>\n  prescriptive_bias: <0-10>\n"
    "  creativity: <0-10>\n  comprehensiveness: <0-10>\ncritiques:\n"
    + "".join(f"  {c}:\n    explanation: ...\n    improvements: ...\n"
              for c in ("refusal", "prescriptive_bias", "creativity", "comprehensiveness"))
    + "\nQuestion: {instruction}\nAnswer: {answer}\n")
_REVISE_PROMPT = (
    "Definitions:\n" + _CRITERIA.replace("{there}", "their") +
    "\nGiven the following Question, Response, and Evaluation, revise the Response based on the Evaluation and "
    "recommendations for improvements. Reply only with the revised response.\n\n"
    "Question: {instruction}\nAnswer: {answer}\nEvaluation:\n{scores:yaml}{critiques:yaml}\n")
_CREATIVE_EXAMPLE = {"instruction": "Write a line about rain.", "answer": "It rains.",
                     "scores": {"refusal": 10, "creativity": 2}, "critiques": {"creativity": {"explanation": "Flat."}},
                     "revision": "Silver threads stitch the grey sky to the street."}
# CreativePrompterBase.build_prompt: f"{system_prompt}\nUSER: {instruction}\nASSISTANT:" (no system: no line).
_CREATIVE = {"turn_format": "USER: {instruction}\nASSISTANT:",
             "turn_no_input_format": "USER: {instruction}\nASSISTANT:", "system_format": "{system}\n", "input": ""}
_W_SYSTEM_EXAMPLE = {**_ALPACA_EXAMPLE, "system": "You are terse."}
_ORCA_EXAMPLE = {"system_prompt": "You are terse.", "question": "Name a prime number.", "response": "Seven."}

TYPES: dict[str, InstructType] = {
    # prompters.py AlpacaPrompter + prompt_tokenizers.py AlpacaPromptTokenizingStrategy (utils/data/wrappers.py)
    "alpaca": InstructType("src/axolotl/prompters.py (AlpacaPrompter)", _ALPACA_EXAMPLE, system_prompt=ALPACA_SYSTEM,
                           system_no_input_prompt=ALPACA_SYSTEM_NO_INPUT, styles=True,
                           note="a row's `system` column is ignored (alpaca_w_system uses it)"),
    "jeopardy": InstructType("src/axolotl/prompters.py (JeopardyPrompter)",
                             {"question": "This planet has a great red spot.", "category": "SPACE",
                              "answer": "Jupiter"},
                             instruction="{question}", input="{category}", output="what is {answer}",
                             system_prompt=ALPACA_SYSTEM, system_no_input_prompt=ALPACA_SYSTEM_NO_INPUT, styles=True,
                             note="JeopardyPrompter.prompt_input is never used: the prompt is alpaca's"),
    "oasst": InstructType("src/axolotl/prompt_tokenizers.py (OpenAssistantPromptTokenizingStrategy)",
                          {"INSTRUCTION": "Name a prime number.", "RESPONSE": "Seven."},
                          instruction="{INSTRUCTION}", input="", output="{RESPONSE}", system_prompt=ALPACA_SYSTEM,
                          system_no_input_prompt=ALPACA_SYSTEM_NO_INPUT, styles=True),
    "gpteacher": InstructType("src/axolotl/prompters.py (GPTeacherPrompter)",
                              {"instruction": "Name a prime number.", "input": "", "response": "Seven."},
                              output="{response}", system_prompt=ALPACA_SYSTEM,
                              system_no_input_prompt=ALPACA_SYSTEM_NO_INPUT, styles=True),
    # ReflectAlpacaPrompter: its class attributes (no system) unless the style is instruct or chat.
    "reflection": InstructType(
        "src/axolotl/prompters.py (ReflectAlpacaPrompter)",
        {**_ALPACA_EXAMPLE, "reflection": "Seven is prime.", "corrected": "Seven."}, output=_REFLECT_LABEL,
        system_format="", styles=True,
        by_style={"instruct": {"system_prompt": _REFLECT_SYSTEM, "system_no_input_prompt": _REFLECT_SYSTEM_NO_INPUT,
                               "system_format": "{system}"},
                  # the chat label leaves {corrected} out (str.format ignores the unused argument)
                  "chat": {"system_prompt": _REFLECT_SYSTEM, "system_no_input_prompt": _REFLECT_SYSTEM_NO_INPUT,
                           "system_format": "{system}",
                           "output": "\nTHOUGHT: {output}\nASSISTANT REFLECTION: {reflection}\nASSISTANT:"},
                  "chatml": _REFLECT_PLAIN, "phi": _REFLECT_PLAIN},
        note="without a style (or with chatml/phi) no system prompt is written; reflection:instruct writes it"),
    "explainchoice": InstructType("src/axolotl/prompters.py (MultipleChoiceExplainPrompter)",
                                  {"question": "Which is prime?", "choices": ["4", "7"], "explanation": "7 is prime."},
                                  instruction="{question}", input="{choices:choices}", output="{solution|explanation}",
                                  system_prompt=_EXPLAIN_SYSTEM, system_no_input_prompt=_EXPLAIN_SYSTEM, styles=True),
    # MultipleChoiceConcisePrompter / SummarizeTLDRPrompter override match_prompt_style: the style is ignored.
    "concisechoice": InstructType("src/axolotl/prompters.py (MultipleChoiceConcisePrompter)",
                                  {"question": "Which is prime?", "choices": ["4", "7"], "solution": "7"},
                                  instruction="{question}", input="{choices:choices}", output="{solution|explanation}",
                                  system_prompt=_CONCISE_SYSTEM, system_no_input_prompt=_CONCISE_SYSTEM,
                                  **{**_CHAT, "system_format": "{system}"}, styles=True,
                                  by_style={s: {**_CHAT, "system_format": "{system}"} for s in STYLES}),
    "summarizetldr": InstructType(
        "src/axolotl/prompters.py (SummarizeTLDRPrompter)",
        {"article": "Rain fell all day in the city.", "summary": "It rained."}, instruction="{article}", input="",
        output="{summary}", system_format="{system}",
        turn_format="USER: Summarize the following article as a TL;DR.\n{instruction}\n{input}\nASSISTANT:",
        turn_no_input_format="USER: Summarize the following article as a TL;DR.\n{instruction}\nASSISTANT:",
        styles=True, by_style={s: {"turn_format": "USER: Summarize the following article as a TL;DR.\n{instruction}\n"
                                   "{input}\nASSISTANT:",
                                   "turn_no_input_format": "USER: Summarize the following article as a TL;DR.\n"
                                   "{instruction}\nASSISTANT:", "system_format": "{system}"} for s in STYLES}),
    # prompt_strategies/alpaca_instruct.py
    "alpaca_instruct": InstructType("src/axolotl/prompt_strategies/alpaca_instruct.py (load)", _ALPACA_EXAMPLE,
                                    system_prompt=ALPACA_SYSTEM, system_no_input_prompt=ALPACA_SYSTEM_NO_INPUT),
    "alpaca_instruct.load_no_prompt": InstructType(
        "src/axolotl/prompt_strategies/alpaca_instruct.py (load_no_prompt, UnpromptedPrompter)", _ALPACA_EXAMPLE),
    # prompt_strategies/alpaca_chat.py
    "alpaca_chat": InstructType("src/axolotl/prompt_strategies/alpaca_chat.py (load)", _ALPACA_EXAMPLE,
                                system_prompt=ALPACA_SYSTEM, system_no_input_prompt=ALPACA_SYSTEM_NO_INPUT, **_CHAT,
                                note="reads `output` (the docs show `response`); `conversation:` picks the style"),
    "alpaca_chat.load_qa": InstructType("src/axolotl/prompt_strategies/alpaca_chat.py (load_qa, AlpacaChatPrompter)",
                                        {"question": "Name a prime number.", "answer": "Seven."},
                                        instruction="{question}", input="", output="{answer}",
                                        system_prompt=_CHAT_SYSTEM, system_no_input_prompt=_CHAT_SYSTEM_NO_INPUT,
                                        **_CHAT),
    "alpaca_chat.load_concise": InstructType(
        "src/axolotl/prompt_strategies/alpaca_chat.py (load_concise, AlpacaConcisePrompter)", _ALPACA_EXAMPLE,
        system_prompt=_CHAT_SYSTEM, system_no_input_prompt=_CHAT_SYSTEM_NO_INPUT, **_CHAT,
        note="reads `output` (the docs show `response`)"),
    "alpaca_chat.load_camel_ai": InstructType(
        "src/axolotl/prompt_strategies/alpaca_chat.py (load_camel_ai, AlpacaChatPrompter)",
        {"message_1": "Name a prime number.", "message_2": "Seven."}, instruction="{message_1}", input="",
        output="{message_2}", system_prompt=_CHAT_SYSTEM, system_no_input_prompt=_CHAT_SYSTEM_NO_INPUT, **_CHAT),
    "alpaca_chat.load_no_prompt": InstructType(
        "src/axolotl/prompt_strategies/alpaca_chat.py (load_no_prompt, UnpromptedPrompter)", _ALPACA_EXAMPLE, **_CHAT),
    # prompt_strategies/alpaca_w_system.py: the system text is the row's (none when empty)
    "alpaca_w_system": InstructType("src/axolotl/prompt_strategies/alpaca_w_system.py (load = load_chat)",
                                    _W_SYSTEM_EXAMPLE, system="{system?}", **_CHAT),
    "alpaca_w_system.load_chat": InstructType("src/axolotl/prompt_strategies/alpaca_w_system.py (load_chat)",
                                              _W_SYSTEM_EXAMPLE, system="{system?}", **_CHAT),
    "alpaca_w_system.load_instruct": InstructType("src/axolotl/prompt_strategies/alpaca_w_system.py (load_instruct)",
                                                  _W_SYSTEM_EXAMPLE, system="{system?}"),
    "alpaca_w_system.load_open_orca": InstructType(
        "src/axolotl/prompt_strategies/alpaca_w_system.py (load_open_orca)", _ORCA_EXAMPLE, instruction="{question}",
        input="", output="{response}", system="{system_prompt?}",
        turn_format="### Human:\n{instruction}\n### Additional Context:\n{input}\n### Assistant:\n",
        turn_no_input_format="### Human:\n{instruction}\n### Assistant:\n", system_format="### System:\n{system}\n"),
    "alpaca_w_system.load_open_orca_chatml": InstructType(
        "src/axolotl/prompt_strategies/alpaca_w_system.py (load_open_orca_chatml)", _ORCA_EXAMPLE,
        instruction="{question}", input="", output="{response}", system="{system_prompt?}", **_CHATML),
    # prompt_strategies/orcamini.py: the system block is always written, even empty
    "orcamini": InstructType("src/axolotl/prompt_strategies/orcamini.py", _ORCA_EXAMPLE, instruction="{question}",
                             input="", output="{response}", system="{system_prompt?}", system_format="",
                             turn_no_input_format=("### System:\n{system}\n\n### User:\n{instruction}\n\n"
                                                   "### Response:\n")),
    # prompt_strategies/context_qa.py
    "context_qa": InstructType("src/axolotl/prompt_strategies/context_qa.py (load, AlpacaContextPrompter)",
                               {"article": "Paris is the capital of France.", "question": "What is France's capital?",
                                "answer": "Paris."},
                               instruction="{article}\n===\n{question}", input="", output="{answer}",
                               system_prompt=_CONTEXT_SYSTEM, system_no_input_prompt=_CONTEXT_SYSTEM, **_CHAT),
    "context_qa.load_v2": InstructType("src/axolotl/prompt_strategies/context_qa.py (load_v2, ContextV2Prompter)",
                                       {"context": "Paris is the capital of France.",
                                        "question": "What is France's capital?", "answer": "Paris."},
                                       instruction="Context: {context}\nQuestion: {question}\n", input="",
                                       output="Answer: {answer}", turn_format="{instruction}\n{input}",
                                       turn_no_input_format="{instruction}", system_format="{system}"),
    "context_qa.load_404": InstructType(
        "src/axolotl/prompt_strategies/context_qa.py (load_404, AlpacaMissingInfoContextPromptTokenizingStrategy)",
        {"article": "Paris is the capital of France.", "unanswerable_question": "What is Spain's capital?"},
        instruction="{article}\n===\n{unanswerable_question}", input="",
        output="The context provided does not contain any information about your inquiry. "
               "Therefore, I'm unable to answer your question based on the given context.",
        system_prompt=_CONTEXT_SYSTEM, system_no_input_prompt=_CONTEXT_SYSTEM, **_CHAT),
    # prompt_strategies/creative_acr.py
    "creative_acr.load_answer": InstructType("src/axolotl/prompt_strategies/creative_acr.py (load_answer)",
                                             _CREATIVE_EXAMPLE, output="{revision}",
                                             system_prompt=_CREATIVE_ANSWER_SYSTEM,
                                             system_no_input_prompt=_CREATIVE_ANSWER_SYSTEM, **_CREATIVE),
    "creative_acr.load_critique": InstructType("src/axolotl/prompt_strategies/creative_acr.py (load_critique)",
                                               _CREATIVE_EXAMPLE, instruction=_CRITIQUE_PROMPT,
                                               output="{scores:yaml}{critiques:yaml}", **_CREATIVE),
    "creative_acr.load_revise": InstructType("src/axolotl/prompt_strategies/creative_acr.py (load_revise)",
                                             _CREATIVE_EXAMPLE, instruction=_REVISE_PROMPT, output="{revision}",
                                             **_CREATIVE),
    # prompt_strategies/metharme.py: the prompt is the row's text as is; three EOS after the generation
    "metharme": InstructType("src/axolotl/prompt_strategies/metharme.py",
                             {"prompt": "<|user|>Name a prime number.<|model|>", "generation": "Seven."},
                             instruction="{prompt}", input="", output="{generation}", turn_format="{instruction}",
                             turn_no_input_format="{instruction}", system_format="", eos=3,
                             note="three EOS tokens after the generation (two if it ends with EOS)"),
}

# `X.load` is the module's default loader, i.e. X (prompt_strategies/__init__.py::load).
ALIASES = {f"{name}.load": name for name in ("alpaca_chat", "alpaca_instruct", "alpaca_w_system", "context_qa",
                                             "metharme", "orcamini")}

# Dataset types that need another trainer (preference, reward, process reward): a clear error until they exist.
_PREFERENCE_PREFIXES = ("dpo", "ipo", "kto", "orpo", "simpo", "chatml.", "llama3.", "zephyr.", "passthrough",
                        "user_defined", "chat_template.")


def unsupported(name: str) -> str | None:
    """Why Tessera cannot prepare this `type:` yet, or None if it is not one of Axolotl's unsupported kinds."""
    if name.startswith("bradley_terry"):
        return (f"type '{name}' is a reward-model (Bradley-Terry) dataset; reward-model training is not supported "
                "yet (a later issue)")
    if name.startswith("stepwise_supervised"):
        return (f"type '{name}' is a process-reward (stepwise supervised) dataset; it is not supported yet "
                "(a later issue)")
    if name.startswith(_PREFERENCE_PREFIXES):
        return (f"type '{name}' is a preference dataset (DPO/IPO/KTO/ORPO); preference training is not supported "
                "yet (a later issue). For supervised fine-tuning on the chosen answers, convert them to "
                "type: chat_template")
    if name.split(".")[0] in ("pygmalion", "llama2_chat", "messages", "ebft", "_synthetic", "input_transform"):
        return f"type '{name}' is not supported yet; use type: chat_template (or a custom instruct mapping)"
    return None


def resolve(name: str) -> InstructType | None:
    """The table row for a `type:` name (with its `:style`), or None if it is not a named instruct type."""
    name = ALIASES.get(name, name)
    base, _, style = name.partition(":")
    found = TYPES.get(base)
    if found is None or (style and (not found.styles or style not in STYLES)):
        return None
    return found.styled(style) if style else found


def names() -> list[str]:
    """Every accepted name (styles included), for validation hints and the README table."""
    out = [*TYPES, *ALIASES]
    out += [f"{n}:{s}" for n, t in TYPES.items() if t.styles for s in STYLES]
    return out


# The deprecated sharegpt type's `conversation:` (a FastChat conversation name) -> the library template that
# renders the same format, where that is clear.
CONVERSATION_TEMPLATES = {"chatml": "chatml", "llama3": "llama3", "llama-3": "llama3", "gemma": "gemma"}


def with_conversation(t: InstructType, conversation: str | None) -> InstructType:
    """alpaca_chat's `conversation:` key is its prompt style (alpaca_chat.py::load)."""
    return t.styled(conversation) if conversation else t


_FIELD = re.compile(r"\{([A-Za-z_][\w]*(?:\|[A-Za-z_][\w]*)?)(\?|:choices|:yaml)?\}")


class FieldError(Exception):
    def __init__(self, kind: str, column: str, message: str):
        super().__init__(message)
        self.kind, self.column, self.message = kind, column, message


def fill_field(template: str, row: dict[str, Any]) -> str:
    """A field template filled from the row's columns (see the module docstring). Raises FieldError with kind
    missing | empty | type."""
    return _FIELD.sub(lambda m: _column(row, m.group(1), m.group(2) or ""), template)


def _column(row: dict[str, Any], names: str, mode: str) -> str:
    if "|" in names:  # `"solution" in prompt` decides, as in Axolotl, even when it is empty
        first, second = names.split("|")
        names = first if first in row else second
    if names not in row:
        if mode == "?":
            return ""
        raise FieldError("missing", names, f"no field '{names}'")
    value = row[names]
    if mode == ":yaml":
        import yaml

        return yaml.dump(value, default_flow_style=False, Dumper=yaml.Dumper)
    if mode == ":choices":
        if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
            raise FieldError("type", names, f"'{names}' must be a list of texts")
        return "\n".join(f'- "{choice}"' for choice in value)
    if value is None or value == "":
        if mode == "?":
            return ""
        raise FieldError("empty", names, f"'{names}' is empty")
    if not isinstance(value, str):
        raise FieldError("type", names, f"'{names}' is a {type(value).__name__}, expected text")
    return value
