"""Prompt templates: how an input, the demonstrations and the answer slot are laid out.

    [instruction]                      <- shared: computed once for every query
    [demo 1 query][answer] [label 1]   <- shared when demonstrations are fixed
    ...
    [query][answer]                    <- own: ends right before the label's words
    ␣[label words]                     <- the continuation that is scored

A template is four strings with `{text}`, `{labels}` and `{description}` placeholders. Built-in
templates are generic so they work on any task; `prompt_template` picks the best on validation data.
Users pass their own as `"Review: {text}\\nSentiment:"` (query and answer in one string: the answer
is everything after the last `{text}` line) or as a YAML mapping with the four fields.
"""

from __future__ import annotations

from dataclasses import dataclass

from tailorlm.data.task import Example, Task
from tailorlm.engine.prompt import Prompt
from tailorlm.errors import TailorError


@dataclass(frozen=True)
class Template:
    name: str
    query: str  # one input, with {text}
    answer: str  # the words right before the label: "Answer:"
    instruction: str = ""  # shared header, may use {labels} and {description}
    separator: str = "\n\n"  # between demonstrations and before the query
    answer_space: str = " "  # between `answer` and the label's words

    def header(self, task: Task) -> str:
        if not self.instruction:
            return ""
        return _fill(self.instruction, task) + self.separator

    def render_query(self, task: Task, text: str) -> str:
        # {text} last, so braces inside the user's text are never read as placeholders
        return _fill(self.query + self.answer, task).replace("{text}", text)

    def render_demo(self, task: Task, example: Example) -> str:
        return (self.render_query(task, example.input) + self.answer_space + example.target
                + self.separator)

    def prompt(self, task: Task, example: Example, demos: list[Example] = (),
               shared_demos: bool = True) -> Prompt:
        demo_text = "".join(self.render_demo(task, d) for d in demos)
        own = self.render_query(task, example.input)
        if shared_demos:
            return Prompt(shared=self.header(task) + demo_text, own=own)
        return Prompt(shared=self.header(task), own=demo_text + own)

    def continuations(self, task: Task) -> list[str]:
        if task.kind != "classification":
            return []
        return [self.answer_space + task.verbalizer[lab] for lab in task.labels]


def _fill(text: str, task: Task) -> str:
    words = [task.verbalizer[lab] for lab in task.labels]
    labels = ", ".join(words[:-1]) + " or " + words[-1] if len(words) > 1 else "".join(words)
    description = task.description or "the category of the text"
    return text.replace("{labels}", labels).replace("{description}", description)


# Zero-shot accuracy of a small model hangs on the word before the answer: on sst2 with
# SmolLM2-135M, "Text: x\nSentiment:" scores 0.80 and "Text: x\nLabel:" 0.62 (docs/benchmarks.md).
# So the built-ins are a set of answer cues, and `auto` lets validation data pick. (The input's
# noun matters far less: "Text"/"Input" moved sst2 by at most 0.04 at the same cue.)
ANSWER_CUES = ("Label", "Category", "Sentiment", "Topic", "Intent", "Type")

CLASSIFICATION = {
    f"text_{cue.lower()}": Template(f"text_{cue.lower()}", query="Text: {text}\n",
                                     answer=f"{cue}:")
    for cue in ANSWER_CUES
}
CLASSIFICATION["instruct"] = Template(
    "instruct", query="Text: {text}\n", answer="Answer:",
    instruction="Decide {description}. Answer with one of: {labels}.")

GENERATION = {
    "input_output": Template("input_output", query="Input: {text}\n", answer="Output:"),
    "instruct": Template("instruct", query="Input: {text}\n", answer="Output:",
                         instruction="{description}."),
}


def builtin_templates(task: Task) -> dict[str, Template]:
    return CLASSIFICATION if task.kind == "classification" else GENERATION


def resolve(spec: str | dict, task: Task) -> Template:
    """A built-in template by name, or a user template string / mapping."""
    if isinstance(spec, dict):
        try:
            return Template(name=spec.get("name", "custom"), **{k: v for k, v in spec.items()
                                                               if k != "name"})
        except TypeError as e:
            raise TailorError(f"bad template mapping ({e}); fields are query, answer, "
                              "instruction, separator, answer_space") from None
    builtins = builtin_templates(task)
    if spec == "default":  # the kind's first built-in: what trained methods learn to answer after
        return next(iter(builtins.values()))
    if spec in builtins:
        return builtins[spec]
    if "{text}" not in spec:
        raise TailorError(f"template {spec!r} is neither a built-in ({', '.join(builtins)}) "
                          "nor a template with a {text} placeholder")
    # "Review: {text}\nSentiment:" -> query "Review: {text}\n", answer "Sentiment:"
    head, _, tail = spec.rpartition("{text}")
    line_end = tail.find("\n")
    query = head + "{text}" + (tail[:line_end + 1] if line_end >= 0 else "")
    answer = tail[line_end + 1:] if line_end >= 0 else tail
    if not answer.strip():
        raise TailorError(f"template {spec!r} has nothing after the input for the answer to "
                          "follow; end it with a cue such as '\\nAnswer:'")
    return Template(name="custom", query=query, answer=answer.rstrip(" "))


# Rewordings for measuring prompt sensitivity (compare/sensitivity.py): the same request in other
# words and layouts (cue word, casing, one line or two, an instruction line). None is tuned for
# any task; the spread of a method's score over them is what a user's own rewording would risk.
PARAPHRASES = {
    "classification": [
        Template("p_text_label", query="Text: {text}\n", answer="Label:"),
        Template("p_input_answer", query="Input: {text}\n", answer="Answer:"),
        Template("p_one_line", query="text: {text} ", answer="label:"),
        Template("p_caps", query="TEXT: {text}\n\n", answer="LABEL:"),
        Template("p_question", query="{text}\n", answer="Q: Which class is this?\nA:"),
        Template("p_instruct", query="Text: {text}\n", answer="Class:",
                 instruction="Classify the text as {labels}."),
    ],
    "generation": [
        Template("p_input_output", query="Input: {text}\n", answer="Output:"),
        Template("p_data_text", query="Data: {text}\n", answer="Text:"),
        Template("p_one_line", query="input: {text} ", answer="output:"),
        Template("p_caps", query="INPUT: {text}\n\n", answer="OUTPUT:"),
        Template("p_arrow", query="{text}\n", answer="=>"),
        Template("p_instruct", query="Input: {text}\n", answer="Output:",
                 instruction="Write the output for the input."),
    ],
}
