"""Number normalisation across legs (RFC 3966 visual separators, prefixes)."""

from __future__ import annotations

import pytest

from sipflow.correlate.normalise import NumberPlan, host_of, normalise_user, same_number, user_of


@pytest.mark.parametrize(
    ("uri", "user"),
    [
        ("sip:+4930123456@example.com;user=phone", "+4930123456"),
        ("<sips:alice@example.com:5061>", "alice"),
        ("tel:+1-201-555-0123;phone-context=example.com", "+1-201-555-0123"),
        ("sip:example.com", None),
        ("http://example.com", None),
        ("sip:%2B49301@h", "+49301"),
        (None, None),
    ],
)
def test_user_of(uri: str | None, user: str | None) -> None:
    assert user_of(uri) == user


def test_host_of() -> None:
    assert host_of("sip:bob@[2001:db8::1]:5060;transport=tcp") == "2001:db8::1"
    assert host_of("sip:bob@Biloxi.Example.COM:5060") == "biloxi.example.com"


def test_international_national_and_visual_forms_agree() -> None:
    de = NumberPlan(country_code="49")
    forms = ["+49 30 1234567", "0049301234567", "030-1234567", "(030) 123 4567"]
    norm = {normalise_user(f, de) for f in forms}
    assert norm == {"301234567"}


def test_suffix_comparison_and_names() -> None:
    assert same_number(normalise_user("+12015550123"), normalise_user("2015550123"))
    assert same_number(normalise_user("2302"), normalise_user("2302"))
    assert not same_number(normalise_user("2302"), normalise_user("2303"))
    assert normalise_user("Telephone1") == "telephone1"
    assert same_number(None, "1") is None


def test_tech_prefix_stripped() -> None:
    plan = NumberPlan(strip_prefixes=("*31#",))
    assert normalise_user("*31#015551234567", plan) == "15551234567"
