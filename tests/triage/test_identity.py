"""The identity rules as pure functions, with properties: comparing a referral's demographics with
the person its NHS number matched (a date of birth or name that disagrees is a review, a postcode
alone is information), near matches (transposed day and month, middle names, double-barrelled
surnames, nicknames) flagged and never taken for the same person, and the text rule refusing
control and invisible formatting characters in names (shared.text)."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from services.triage import identity
from services.triage.domain import name_key
from services.triage.identity import DateRelation, Demographics, NameReason
from shared.text import check_text, is_refused

names = st.text(
    alphabet=st.characters(categories=("L", "Zs", "Pd", "Po", "M")), min_size=1, max_size=30
).filter(lambda s: identity.fold(s))
dates = st.dates(min_value=date(1900, 1, 1), max_value=date(2030, 12, 31))
postcodes = st.sampled_from(["PR1 3BQ", "BB2 2DH", "LA9 4DL", "FY1 1EJ", None])


def person(
    given_name: str = "Sam", family: str = "Example", born: date = date(1990, 4, 2), **kw: object
) -> Demographics:
    return Demographics(
        given_name=given_name,
        family_name=family,
        birth_date=born,
        postcode=kw.get("postcode", "PR1 3BQ"),  # type: ignore[arg-type]
        nhs_number=kw.get("nhs"),  # type: ignore[arg-type]
    )


# --- comparison after an NHS number match --------------------------------------------------------


@given(names, names, dates, postcodes)
def test_a_person_never_disagrees_with_themself(
    given_name: str, family: str, born: date, postcode: str | None
) -> None:
    same = Demographics(given_name, family, born, postcode)
    comparison = identity.compare(same, same)
    assert comparison.disagreeing == () and not comparison.needs_review
    assert identity.name_reasons(given_name, family, given_name, family) == frozenset()
    assert identity.near_match(same, same) == (
        ("same_birth_date", "same_name", "same_postcode") if postcode else ("same_birth_date", "same_name")
    )


@given(names, names)
def test_names_the_same_by_the_stored_key_are_the_same(given_name: str, family: str) -> None:
    shouted = (given_name.upper(), f"  {family.swapcase()} ")
    if name_key(*shouted) == name_key(given_name, family):
        assert identity.name_reasons(*shouted, given_name, family) == frozenset()


@given(dates, dates, postcodes)
def test_a_differing_date_of_birth_is_always_a_review(
    on_file: date, referred: date, postcode: str | None
) -> None:
    assume(on_file != referred)
    comparison = identity.compare(person(born=on_file), person(born=referred))
    assert comparison.needs_review and "birth_date" in comparison.disagreeing
    assert comparison.kinds()["birth_date"] != ["same"]


@given(dates)
def test_swapping_day_and_month_is_flagged_as_transposed(born: date) -> None:
    assume(born.day <= 12 and born.day != born.month)
    swapped = date(born.year, born.day, born.month)
    assert identity.swapped_day_month(born) == swapped
    assert identity.birth_date_relation(swapped, born) is DateRelation.TRANSPOSED
    comparison = identity.compare(person(born=born), person(born=swapped))
    assert comparison.needs_review and comparison.kinds()["birth_date"] == ["day_month_transposed"]
    # Without an NHS number: flagged as a possible duplicate, never the same person.
    reasons = identity.near_match(person(born=swapped), person(born=born))
    assert reasons is not None and "day_month_transposed" in reasons
    assert not identity.is_exact(reasons)


@given(dates)
def test_no_transposition_when_it_is_not_another_date(born: date) -> None:
    assume(born.day > 12 or born.day == born.month)
    assert identity.swapped_day_month(born) is None


def test_a_postcode_alone_is_information_not_review() -> None:
    comparison = identity.compare(person(postcode="PR1 3BQ"), person(postcode="BB2 2DH"))
    assert comparison.disagreeing == ("postcode",) and not comparison.needs_review
    rules = identity.identity_rules(comparison, date(1990, 4, 2), date(1990, 4, 2), date(2026, 1, 5))
    assert [rule.id for rule in rules] == ["I-postcode-differs"]


def test_the_seen_defect_is_a_review_naming_every_field() -> None:
    on_file = person("Sam", "Example", date(1990, 4, 2), postcode="PR1 3BQ")
    referred = person("Margaret", "Thwaite", date(1948, 11, 23), postcode="LA9 4DL")
    comparison = identity.compare(on_file, referred)
    assert comparison.needs_review
    assert comparison.disagreeing == ("birth_date", "name", "postcode")
    assert comparison.kinds() == {
        "birth_date": ["different"],
        "name": ["different"],
        "postcode": ["different"],
    }
    rules = identity.identity_rules(comparison, referred.birth_date, on_file.birth_date, date(2026, 1, 5))
    assert [rule.id for rule in rules] == ["I-identity-review"]
    text = rules[0].text
    assert "date of birth as referred (age 77; age 35 on the date of birth on file)" in text
    assert "identity to be confirmed" in text
    assert "Margaret" not in text and "1948" not in text  # kinds and ages, never the values


def test_a_name_only_difference_is_a_review() -> None:
    comparison = identity.compare(person("Robert"), person("Bob"))
    assert comparison.needs_review and comparison.disagreeing == ("name",)
    assert comparison.kinds() == {"name": ["nickname"]}


# --- near matches --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("referred", "on_file", "reason"),
    [
        (("Bob", "Smith"), ("Robert", "Smith"), NameReason.NICKNAME),
        (("Liz", "Smith"), ("Elizabeth", "Smith"), NameReason.NICKNAME),
        (("Bill", "Smith"), ("William", "Smith"), NameReason.NICKNAME),
        (("Peggy", "Smith"), ("Margaret", "Smith"), NameReason.NICKNAME),
        (("Sam Alex", "Smith"), ("Sam", "Smith"), NameReason.MIDDLE_NAME),
        (("Sam", "Smith"), ("Sam Alex", "Smith"), NameReason.MIDDLE_NAME),
        (("Alex", "Smith"), ("Sam Alex", "Smith"), NameReason.MIDDLE_NAME),
        (("Sam", "Smith-Jones"), ("Sam", "Jones"), NameReason.HYPHENATED_SURNAME),
        (("Sam", "Jones"), ("Sam", "Smith Jones"), NameReason.HYPHENATED_SURNAME),
        (("Sam", "Jones-Smith"), ("Sam", "Smith-Jones"), NameReason.HYPHENATED_SURNAME),
        (("Sam", "Smyth"), ("Sam", "Smith"), NameReason.SIMILAR_SPELLING),
        (("Steven", "Smith"), ("Stephen", "Smith"), NameReason.NICKNAME),
        (("Smith", "Sam"), ("Sam", "Smith"), NameReason.SWAPPED),
    ],
)
def test_near_names_are_recognised(
    referred: tuple[str, str], on_file: tuple[str, str], reason: NameReason
) -> None:
    found = identity.name_reasons(*referred, *on_file)
    assert found is not None and reason in found
    reasons = identity.near_match(person(*referred), person(*on_file))
    assert reasons is not None and reason.value in reasons and not identity.is_exact(reasons)


@pytest.mark.parametrize(
    ("referred", "on_file"),
    [
        (("Sam", "Example"), ("Jo", "Bloggs")),
        (("Sam", "Jones"), ("Sam", "James")),
        (("Ann", "Lee"), ("Eve", "Lee")),
    ],
)
def test_different_names_are_not_near(referred: tuple[str, str], on_file: tuple[str, str]) -> None:
    assert identity.name_reasons(*referred, *on_file) is None
    assert identity.near_match(person(*referred), person(*on_file)) is None


def test_hyphens_and_spaces_do_not_make_another_surname() -> None:
    assert identity.name_reasons("Sam", "Smith-Jones", "Sam", "Smith Jones") == frozenset()


def test_people_with_different_nhs_numbers_are_different_people() -> None:
    a, b = person(nhs="9434765919"), person(nhs="4010232137")
    assert identity.near_match(a, b) is None
    assert identity.near_match(a, b, ignore_nhs=True) is not None  # when the NHS number is in doubt


def test_near_on_both_birth_date_and_spelling_is_not_flagged() -> None:
    swapped = person("Sam", "Smyth", date(1990, 2, 4))
    assert identity.near_match(swapped, person("Sam", "Smith", date(1990, 4, 2))) is None
    # ...but a recognised name pattern with a transposed date is.
    assert identity.near_match(person("Bob", born=date(1990, 2, 4)), person("Robert")) is not None


def test_a_single_digit_slip_in_the_birth_date_is_near() -> None:
    assert identity.birth_date_relation(date(1990, 4, 12), date(1990, 4, 21)) is DateRelation.TYPO
    assert identity.birth_date_relation(date(1991, 4, 2), date(1990, 4, 2)) is DateRelation.TYPO
    assert identity.birth_date_relation(date(1970, 9, 9), date(1990, 4, 2)) is DateRelation.DIFFERENT


@given(
    st.sampled_from(identity.NICKNAME_GROUPS).flatmap(
        lambda g: st.tuples(st.sampled_from(sorted(g)), st.sampled_from(sorted(g)))
    )
)
def test_nicknames_are_symmetric(pair: tuple[str, str]) -> None:
    a, b = pair
    assert identity.names_equivalent(a, b) and identity.names_equivalent(b, a)
    assert identity.names_equivalent(a.upper(), b.capitalize())


@given(names, names, names, names)
def test_name_reasons_are_symmetric_in_sameness(g1: str, f1: str, g2: str, f2: str) -> None:
    one, other = identity.name_reasons(g1, f1, g2, f2), identity.name_reasons(g2, f2, g1, f1)
    assert (one == frozenset()) == (other == frozenset())
    assert (one == frozenset()) == (name_key(g1, f1) == name_key(g2, f2))


# --- the text rule -------------------------------------------------------------------------------

refused = st.one_of(
    st.characters(min_codepoint=0, max_codepoint=0x1F),
    st.characters(min_codepoint=0x7F, max_codepoint=0x9F),
    st.sampled_from(
        ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069"]
    ),
    st.sampled_from(["\u200b", "\ufeff", "\u2060", "\u200e", "\u200f", "\u2028", "\u2029", "\U000e0041"]),
)


@settings(max_examples=200)
@given(names, st.integers(min_value=0, max_value=30))
def test_a_nul_anywhere_is_refused(name: str, at: int) -> None:
    at = min(at, len(name))
    text = name[:at] + "\x00" + name[at:]
    assert identity.refused_character(text) == "U+0000 control character"
    with pytest.raises(ValueError, match="U\\+0000"):
        check_text(text)


@given(names, refused, st.integers(min_value=0, max_value=30))
def test_controls_bidi_overrides_and_zero_width_characters_are_refused(name: str, bad: str, at: int) -> None:
    at = min(at, len(name))
    text = name[:at] + bad + name[at:]
    found = identity.refused_character(text)
    assert found is not None and found.startswith(f"U+{ord(bad):04X}")
    with pytest.raises(ValueError) as refusal:
        check_text(text)
    assert name not in str(refusal.value) or len(name) < 3  # names the code point, not the text


@given(names, st.sampled_from(["\u200d", "\u200c"]))
def test_joiners_are_allowed(name: str, joiner: str) -> None:
    text = name + joiner + name
    assert identity.refused_character(text) is None and check_text(text) == text


def test_real_names_with_joiners_are_allowed() -> None:
    for name in (
        "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",
        "\u0915\u094d\u200d\u0937",
        "Zoë O'Brien-Ní Bhriain",
    ):
        assert identity.refused_character(name) is None


def test_line_breaks_only_in_multiline_text() -> None:
    assert is_refused("\n") and not is_refused("\n", multiline=True)
    assert is_refused("\x00", multiline=True) and is_refused("\u202e", multiline=True)


@pytest.mark.parametrize("bad", ["\x00", "\u202e", "\u200b"])
def test_the_same_rule_guards_names_across_the_suite(bad: str) -> None:
    from pydantic import TypeAdapter, ValidationError

    from services.directory.schemas import LongText, Text
    from services.registry.schemas import Name as RegistryName
    from services.triage.schemas import Name as PersonName

    for kind in (PersonName, RegistryName, Text, LongText):
        adapter = TypeAdapter(kind)
        assert adapter.validate_python("Preston Mind\u200d") == "Preston Mind\u200d"
        with pytest.raises(ValidationError, match="not allowed"):
            adapter.validate_python(f"Preston{bad} Mind")
    assert TypeAdapter(LongText).validate_python("Line one\nLine two") == "Line one\nLine two"
