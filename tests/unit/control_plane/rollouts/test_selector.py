"""Label selectors: the grammar, errors that name the bad term, Kubernetes matching.

``parse_selector`` is pure, so these are plain tables plus two Hypothesis
properties: printing a selector and parsing it back gives the same selector,
and ``!=`` / ``notin`` / ``!key`` are the exact complements of ``=`` / ``in`` /
``key`` on any labels (which is what makes them match unlabelled devices).
"""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from control_plane.errors import InvalidInputError
from control_plane.rollouts.selector import Op, Requirement, Selector, parse_selector
from fleetcore.protocol import LABEL_KEY, LABEL_VALUE


def req(key: str, op: Op, *values: str) -> Requirement:
    return Requirement(key, op, frozenset(values))


PARSES = {
    "equals": ("hw=rpi4", [req("hw", Op.IN, "rpi4")]),
    "double equals": ("hw==rpi4", [req("hw", Op.IN, "rpi4")]),
    "not equals": ("hw!=rpi4", [req("hw", Op.NOT_IN, "rpi4")]),
    "in": ("site in (a,b)", [req("site", Op.IN, "a", "b")]),
    "notin": ("site notin (a,b)", [req("site", Op.NOT_IN, "a", "b")]),
    "exists": ("gpu", [req("gpu", Op.EXISTS)]),
    "absent": ("!legacy", [req("legacy", Op.ABSENT)]),
    "in with one value": ("site in (a)", [req("site", Op.IN, "a")]),
    "duplicate values": ("site in (a,a,b)", [req("site", Op.IN, "a", "b")]),
    "value with dots and colons": ("fw=v1.2:rc-3_x", [req("fw", Op.IN, "v1.2:rc-3_x")]),
    "keys named like operators": ("in, notin=x", [req("in", Op.EXISTS), req("notin", Op.IN, "x")]),
    "whitespace everywhere": (
        "  site  in  ( a , b ) ,hw = rpi4 ,  ! legacy , cam!=  x  ",
        [
            req("site", Op.IN, "a", "b"),
            req("hw", Op.IN, "rpi4"),
            req("legacy", Op.ABSENT),
            req("cam", Op.NOT_IN, "x"),
        ],
    ),
    "order kept": ("b=1, a=2", [req("b", Op.IN, "1"), req("a", Op.IN, "2")]),
}


@pytest.mark.parametrize(("text", "expected"), PARSES.values(), ids=PARSES.keys())
def test_parse(text: str, expected: list[Requirement]) -> None:
    assert parse_selector(text) == Selector(tuple(expected))


@pytest.mark.parametrize("text", [None, "", "   ", "\t\n"])
def test_an_empty_selector_has_no_requirements_and_matches_everything(text: str | None) -> None:
    selector = parse_selector(text)
    assert selector == Selector()
    assert selector.matches({})
    assert selector.matches({"site": "a", "hw": "rpi4"})


#: text -> a fragment the error message must contain (the bad term, quoted).
ERRORS = {
    "empty term in the middle": ("hw=rpi4,,gpu", "selector term ''"),
    "trailing comma": ("hw=rpi4,", "selector term ''"),
    "leading comma": (",hw=rpi4", "selector term ''"),
    "blank term": ("hw=rpi4,   ,gpu", "selector term ''"),
    "unclosed set": ("site in (a,b", "unbalanced '('"),
    "unopened set": ("site in a,b)", "unbalanced ')'"),
    "close before open": ("site in )a(", "unbalanced ')'"),
    "empty set": ("site in ()", "'site in ()': empty value in the set"),
    "empty value in a set": ("hw=x, site in (a,,b)", "'site in (a,,b)': empty value in the set"),
    "nested parens": ("site in ((a))", "selector term 'site in ((a))' is not key=value"),
    "upper-case key": ("Site=a", "'Site' is not a label key"),
    "bad key in a set": ("Site in (a)", "'Site' is not a label key"),
    "bad value": ("hw=rpi4, cam=-x", "selector term 'cam=-x': '-x' is not a label value"),
    "bad value in a set": ("site notin (a,b c)", "'b c' is not a label value"),
    "second equals sign": ("a=b=c", "'b=c' is not a label value"),
    "space inside a value": ("hw=rpi 4", "selector term 'hw=rpi 4'"),
    "negated equality": ("!hw=x", "selector term '!hw=x'"),
    "missing value": ("gpu, hw=", "selector term 'hw='"),
    "bare bang": ("!", "selector term '!'"),
    "too long": ("a" * 4001, "longer than 4000"),
}


@pytest.mark.parametrize(("text", "fragment"), ERRORS.values(), ids=ERRORS.keys())
def test_bad_selectors_are_refused_naming_the_term(text: str, fragment: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_selector(text)
    assert fragment in str(caught.value)


def test_the_error_names_only_the_bad_term() -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_selector("site in (a,b), hw=Bad Value, gpu")
    message = str(caught.value)
    assert "'hw=Bad Value'" in message
    assert "site" not in message
    assert "gpu" not in message


MATCHES = {
    "= needs the label": ("hw=rpi4", {}, False),
    "= matches the value": ("hw=rpi4", {"hw": "rpi4"}, True),
    "= is case-sensitive": ("hw=rpi4", {"hw": "RPI4"}, False),
    "!= matches a device without the label": ("hw!=rpi4", {}, True),
    "!= refuses the value": ("hw!=rpi4", {"hw": "rpi4"}, False),
    "!= matches another value": ("hw!=rpi4", {"hw": "rpi5"}, True),
    "in needs the label": ("site in (a,b)", {}, False),
    "in matches a member": ("site in (a,b)", {"site": "b"}, True),
    "in refuses a non-member": ("site in (a,b)", {"site": "c"}, False),
    "notin matches a device without the label": ("site notin (a,b)", {"hw": "x"}, True),
    "notin refuses a member": ("site notin (a,b)", {"site": "a"}, False),
    "notin matches a non-member": ("site notin (a,b)", {"site": "c"}, True),
    "exists": ("gpu", {"gpu": "t4"}, True),
    "exists needs the label": ("gpu", {"hw": "gpu"}, False),
    "absent": ("!legacy", {"hw": "x"}, True),
    "absent refuses any value": ("!legacy", {"legacy": "no"}, False),
    "comma is AND, all met": ("site in (a,b), hw=rpi4, !legacy", {"site": "a", "hw": "rpi4"}, True),
    "comma is AND, one unmet": ("site in (a,b), hw=rpi4, !legacy", {"site": "a"}, False),
    "comma is AND, absent unmet": (
        "site in (a,b), hw=rpi4, !legacy",
        {"site": "a", "hw": "rpi4", "legacy": "yes"},
        False,
    ),
}


@pytest.mark.parametrize(("text", "labels", "expected"), MATCHES.values(), ids=MATCHES.keys())
def test_matches(text: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_selector(text).matches(labels) is expected


NORMAL_FORMS = {
    "site in (b,a)": "site in (a,b)",
    "site in (a)": "site=a",
    "site notin (a)": "site!=a",
    "hw==x": "hw=x",
    " ! legacy ,gpu": "!legacy, gpu",
    "site notin (c, a,b), hw = x": "site notin (a,b,c), hw=x",
    "": "",
}


@pytest.mark.parametrize(("text", "normal"), NORMAL_FORMS.items())
def test_str_is_the_normal_form_and_parses_back_equal(text: str, normal: str) -> None:
    selector = parse_selector(text)
    assert str(selector) == normal
    assert parse_selector(str(selector)) == selector


_KEY_HEAD = string.ascii_lowercase + string.digits
_VALUE_HEAD = string.ascii_letters + string.digits
# Built from characters, not st.from_regex, which is slow; the filters only guard the strategy.
keys = st.builds(str.__add__, st.sampled_from(_KEY_HEAD), st.text(_KEY_HEAD + "_.-", max_size=62))
keys = keys.filter(LABEL_KEY.fullmatch)
values = st.builds(
    str.__add__, st.sampled_from(_VALUE_HEAD), st.text(_VALUE_HEAD + "_.:-", max_size=62)
).filter(LABEL_VALUE.fullmatch)
value_sets = st.frozensets(values, min_size=1, max_size=4)


@st.composite
def requirements(draw: st.DrawFn) -> Requirement:
    op = draw(st.sampled_from(Op))
    if op in (Op.EXISTS, Op.ABSENT):
        return Requirement(draw(keys), op)
    return Requirement(draw(keys), op, draw(value_sets))


@given(st.lists(requirements(), max_size=6))
def test_any_selector_round_trips_through_its_text(reqs: list[Requirement]) -> None:
    selector = Selector(tuple(reqs))
    assert parse_selector(str(selector)) == selector


@given(keys, value_sets, st.dictionaries(keys, values, max_size=4))
def test_negations_are_exact_complements(
    key: str, vals: frozenset[str], labels: dict[str, str]
) -> None:
    # Labels often lack ``key``; the complement must hold there too.
    assert Requirement(key, Op.NOT_IN, vals).matches(labels) is not Requirement(
        key, Op.IN, vals
    ).matches(labels)
    assert Requirement(key, Op.ABSENT).matches(labels) is not Requirement(key, Op.EXISTS).matches(
        labels
    )
    assert Requirement(key, Op.NOT_IN, vals).matches({k: v for k, v in labels.items() if k != key})
