"""Names and references: the only strings a user gives the registry, checked before anything runs.

    NAME            the latest version of NAME          support-router
    NAME:VERSION    one version (1, 2, ...)             support-router:3
    NAME@ALIAS      where an alias points now           support-router@production

NAME and ALIAS match `^[a-z0-9][a-z0-9._-]{0,63}$`: lower case only, so two names never differ only
by case; no `/`, no `..` at the start, no NUL byte. An alias is not all digits, so `alias NAME 3`
can never mean an alias called "3". None of these strings ever becomes a file name: files are found
by their sha256 only (registry/store.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tailorlm.errors import TailorError

NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
RULE = "lower-case letters, digits, '.', '_' or '-', starting with a letter or digit, at most 64"


def shown(text: str) -> str:
    """A user's string for an error line: quoted, control characters escaped, long ones cut."""
    text = str(text)
    cut = text if len(text) <= 40 else text[:40] + "..."
    return repr(cut)


def check_name(name: str, what: str = "name") -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        hint = ""
        if isinstance(name, str) and name.lower() != name and NAME_RE.fullmatch(name.lower()):
            hint = f" (try {name.lower()!r})"
        elif isinstance(name, str) and len(name) > 64:
            hint = f" ({len(name)} given)"
        raise TailorError(f"{what} {shown(name)} is not valid: use {RULE} characters{hint}")
    return name


def check_alias(alias: str) -> str:
    check_name(alias, "alias")
    if alias.isdigit():
        raise TailorError(f"alias {shown(alias)} is all digits, which reads as a version number; "
                          f"choose a word such as production")
    return alias


@dataclass(frozen=True)
class Ref:
    name: str
    version: int | None = None  # NAME:VERSION
    alias: str | None = None  # NAME@ALIAS

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}:{self.version}"
        return f"{self.name}@{self.alias}" if self.alias else self.name


def parse_ref(text: str) -> Ref:
    """NAME, NAME:VERSION or NAME@ALIAS, each part checked; one clear line for anything else."""
    if not isinstance(text, str) or not text:
        raise TailorError("empty reference: write NAME, NAME:VERSION or NAME@ALIAS")
    if "\x00" in text:
        raise TailorError(f"reference {shown(text)} holds a NUL byte: write NAME, NAME:VERSION "
                          f"or NAME@ALIAS")
    if "@" in text:
        name, _, alias = text.partition("@")
        if not alias:
            raise TailorError(f"reference {shown(text)} names no alias after '@': write "
                              f"NAME@ALIAS, e.g. {shown(name)[1:-1] or 'NAME'}@production")
        return Ref(check_name(name), alias=check_alias(alias))
    if ":" in text:
        name, _, version = text.partition(":")
        if not version.isascii() or not version.isdigit() or int(version) < 1:
            raise TailorError(f"reference {shown(text)}: the version after ':' is a number "
                              f"from 1, e.g. {shown(name)[1:-1] or 'NAME'}:2")
        return Ref(check_name(name), version=int(version))
    return Ref(check_name(text))
