"""Phone numbers and user parts made comparable across the legs of one call.

How this works: a B2BUA or trunk rewrites numbers between legs (``+4930123`` on one side,
``004930123`` or ``030123`` on the other, a tech prefix such as ``*31#`` in front, visual
separators from RFC 3966 §5.1.1 in a tel URI). :func:`normalise_user` reduces a URI's user
part to a canonical form: for something that is mostly digits, the digits only, with the
international prefixes (``+``, ``00``) and a configured national trunk prefix removed;
anything else (``alice``, ``telephone2``) lower-cased. :func:`same_number` then compares
the last ``compare_digits`` digits, so a national and an international form of one number
agree. Pure functions; the plan is a frozen value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote

# RFC 3966 §5.1.1 visual separators, plus the space some logs keep.
_SEPARATORS = re.compile(r"[\s\-.()]")
_DIGITS = re.compile(r"\d+")


@dataclass(frozen=True, slots=True)
class NumberPlan:
    """How numbers are normalised before legs are compared."""

    international_prefixes: tuple[str, ...] = ("+", "00")
    """Removed from the front, first match only (``+``, ``00``, ``011``, ...)."""
    country_code: str = ""
    """Removed after an international prefix (e.g. ``49``), so ``+4930..`` = ``030..``."""
    national_prefix: str = "0"
    """Trunk prefix removed from national numbers (``0`` in most of Europe, ``1`` in NANP)."""
    strip_prefixes: tuple[str, ...] = ()
    """Tech / routing prefixes removed first (e.g. ``*31#``, ``9``), first match only."""
    compare_digits: int = 9
    """Numbers of at least ``min_digits`` digits compare on their last this-many digits."""
    min_digits: int = 6


DEFAULT_PLAN = NumberPlan()


def user_of(uri: str | None) -> str | None:
    """The user part of a sip:/sips:/tel: URI (``None`` when there is none)."""
    if not uri:
        return None
    text = uri.strip().strip("<>")
    scheme, colon, rest = text.partition(":")
    if not colon:
        return None
    scheme = scheme.lower()
    if scheme == "tel":
        return unquote(rest.split(";", 1)[0]) or None
    if scheme not in ("sip", "sips"):
        return None
    user, at, _host = rest.partition("@")
    if not at:
        return None
    return unquote(user.split(";", 1)[0].split(":", 1)[0]) or None


def host_of(uri: str | None) -> str | None:
    """The host of a sip:/sips: URI, lower-cased, without port and parameters."""
    if not uri:
        return None
    rest = uri.strip().strip("<>").partition(":")[2]
    hostport = rest.rpartition("@")[2].split(";", 1)[0].split("?", 1)[0]
    if hostport.startswith("["):
        return hostport[1:].split("]", 1)[0].lower() or None
    return hostport.split(":", 1)[0].lower() or None


_NON_DIGITS = re.compile(r"\D+")


def _is_numberish(user: str) -> bool:
    digits = len(user) - len("".join(_NON_DIGITS.findall(user)))
    return digits >= 3 and digits * 2 >= len(user)


@lru_cache(maxsize=65536)
def normalise_user(user: str | None, plan: NumberPlan = DEFAULT_PLAN) -> str | None:
    """Digits of a number without prefixes; other user parts lower-cased (memoised: the
    same few numbers recur on every leg of a busy trunk)."""
    if not user:
        return None
    text = _SEPARATORS.sub("", user)
    for p in plan.strip_prefixes:
        if p and text.startswith(p):
            text = text[len(p) :]
            break
    if not _is_numberish(text):
        return user.lower()
    international = False
    for p in plan.international_prefixes:
        if p and text.startswith(p):
            text, international = text[len(p) :], True
            break
    digits = "".join(_DIGITS.findall(text))
    if international and plan.country_code and digits.startswith(plan.country_code):
        return digits[len(plan.country_code) :]
    national = not international and plan.national_prefix
    if national and digits.startswith(plan.national_prefix) and len(digits) > plan.min_digits:
        return digits[len(plan.national_prefix) :]
    return digits


def same_number(a: str | None, b: str | None, plan: NumberPlan = DEFAULT_PLAN) -> bool | None:
    """True/False when both are known, None when one is missing.

    Long numbers compare on their last ``compare_digits`` digits (a number with and
    without its country code agree); short ones and names compare exactly.
    """
    if not a or not b:
        return None
    if a == b:
        return True
    if a.isdigit() and b.isdigit() and min(len(a), len(b)) >= plan.min_digits:
        n = plan.compare_digits
        return a[-n:] == b[-n:]
    return False


def is_number(value: str | None) -> bool:
    """A normalised user that is a number (digits only)."""
    return bool(value) and value.isdigit()  # type: ignore[union-attr]
