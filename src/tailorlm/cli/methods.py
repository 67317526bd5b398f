"""`tailor methods [NAME]`: every method with its options, their defaults and what each trades off.

    tailor methods                  one paragraph per method, then its options
    tailor methods lora             the method's whole description, then its options
    tailor methods lora+soft_prompt a hybrid: variant_field, weight.OPTION and input.OPTION

Everything printed is read from the methods' code (methods/describe.py): module docstrings, config
dataclass defaults and the comments beside their fields.
"""

from __future__ import annotations

import shutil
import textwrap


def add_parser(commands) -> None:
    p = commands.add_parser(
        "methods", help="list the methods, their options and defaults",
        description="List every method (or one, or a hybrid WEIGHT+INPUT) with its options, "
        "their defaults and what each trades off. Options are set with `tailor tune --set "
        "OPTION=VALUE` or `tailor compare --set METHOD.OPTION=VALUE`.")
    p.add_argument("name", nargs="?", help="one method, e.g. lora, or a hybrid such as "
                   "lora+soft_prompt")
    p.set_defaults(run=run)


def run(args) -> int:
    from tailorlm.methods import METHODS
    from tailorlm.methods.describe import describe, describe_all

    width = min(100, shutil.get_terminal_size((100, 24)).columns)
    if args.name:
        info = describe(args.name)
        print(_header(info))
        print(textwrap.indent(info.doc, "  "))
        print()
        print(_options(info.options, width))
        return 0
    shared: dict[type, list] = {}  # options a base config declares for several methods
    for info in describe_all():
        print(_header(info))
        print(textwrap.fill(info.summary, width, initial_indent="  ", subsequent_indent="  "))
        own = [o for o in info.options if o.owner is METHODS[info.name].config]
        print(_options(own, width))
        for owner in dict.fromkeys(o.owner for o in info.options if o not in own):
            names = ", ".join(f"{o.name} = {_value(o.default)}" for o in info.options
                              if o.owner is owner and o not in own)
            print(textwrap.fill(f"+ {_title(owner)}: {names}", width, initial_indent="    ",
                                subsequent_indent="      "))
            shared.setdefault(owner, []).append(info)
        print()
    for owner, infos in shared.items():
        users = ", ".join(i.name for i in infos)
        print(f"{_title(owner)} ({users}; defaults above):")
        first = infos[0]
        own = {o.name for o in first.options if o.owner is METHODS[first.name].config}
        print(_options([o for o in first.options if o.owner is owner and o.name not in own],
                       width))
        print()
    weight = ", ".join(n for n, s in sorted(METHODS.items()) if s.side == "weight")
    input_ = ", ".join(n for n, s in sorted(METHODS.items()) if s.side == "input")
    print(textwrap.fill(
        f"Hybrids, WEIGHT+INPUT (e.g. lora+soft_prompt): a weight side ({weight}) fitted once, "
        f"an input side ({input_}) fitted on top of it per value of variant_field. Their "
        "options: `tailor methods WEIGHT+INPUT`.", width))
    return 0


def _header(info) -> str:
    trains = "trains" if info.trains else "trains nothing"
    return f"{info.name}  ({info.family}; {info.side} side; {trains})"


def _title(owner: type) -> str:
    """A shared base config's name for its options: its docstring's first sentence."""
    doc = (owner.__doc__ or owner.__name__).strip().split("\n\n")[0]
    return " ".join(doc.split(";")[0].split(":")[0].split()).rstrip(".")


def _options(options: list, width: int) -> str:
    if not options:
        return "    (no options of its own)"
    names = [f"{o.name} = {_value(o.default)}" for o in options]
    column = min(max(map(len, names)) + 2, 34)
    lines = []
    for name, option in zip(names, options):
        lead = f"    {name}".ljust(column + 4)
        if len(lead) > column + 4:  # a long default: its help starts on the next line
            lines.append(lead.rstrip())
            lead = " " * (column + 4)
        help_ = option.help or "-"
        lines.append(textwrap.fill(help_, width, initial_indent=lead,
                                   subsequent_indent=" " * (column + 4)))
    return "\n".join(lines)


def _value(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(str, value)) + "]"
    if isinstance(value, str):
        return repr(value) if value == "" or value.strip() != value else value
    return str(value)
