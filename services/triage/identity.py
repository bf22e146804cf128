"""Identity rules of triage, as pure functions (no I/O): comparing the demographics a referral
gives with a person on file, classifying near matches, the nickname table, and the text rule for
names.

- A referral never rewrites a person. When its NHS number matches a person on file whose date of
  birth or name disagrees, the referral is flagged for identity review naming the fields
  (`compare`); a postcode that alone differs is information (people move), not a review.
- Without an NHS number match, people who may be the same (`near_match`: same or transposed date
  of birth, a one-keystroke slip in it, a middle name added or dropped, a double-barrelled
  surname given in part, a nickname, a close spelling, given and family names swapped) are
  flagged as possible duplicates, never merged. Only an exact name, date of birth and postcode is
  the same person.
- Names with control characters or invisible formatting are refused (`shared.text`, the one rule
  every service uses; `refused_character` is re-exported here for the identity rules' tests).

String similarity is rapidfuzz's (Jaro-Winkler and optimal string alignment distance), not
hand-written distance code.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from functools import lru_cache

from rapidfuzz.distance import OSA, JaroWinkler

from services.triage.domain import Rule, age_on
from shared.text import refused_character

__all__ = [
    "NICKNAME_GROUPS",
    "Comparison",
    "DateRelation",
    "Demographics",
    "NameReason",
    "birth_date_relation",
    "compare",
    "family_key",
    "fold",
    "identity_rules",
    "name_reasons",
    "names_equivalent",
    "near_match",
    "refused_character",
    "swapped_day_month",
]

# Common English forms of first names that stand for one another. Compiled for this module from
# everyday usage (diminutives and spelling variants heard in UK practice); not copied from a
# published list. A name may be in several groups (Alex: Alexander and Alexandra). Kept small on
# purpose: a pair found here is flagged for a person to look at, never merged.
NICKNAME_GROUPS: tuple[frozenset[str], ...] = tuple(
    frozenset(group.split())
    for group in (
        "robert rob robbie bob bobby bert",
        "elizabeth liz lizzie liza beth betty bess bessie eliza libby elsie",
        "william will willie bill billy liam",
        "margaret maggie meg peggy peg madge marge margie greta",
        "richard rich richie rick ricky dick",
        "james jim jimmy jamie",
        "john jack johnny jon",
        "jonathan jon jonny",
        "edward ed eddie ted teddy ned",
        "catherine katherine kathryn cathy kathy kate katie kath kay kitty",
        "anthony antony tony",
        "thomas tom tommy",
        "michael mike mick mickey",
        "christopher chris kit",
        "christine chris chrissie tina",
        "alexander alex sandy xander",
        "alexandra alex sandra sandy lexi",
        "joseph joe joey",
        "josephine jo josie",
        "joanne joanna jo",
        "daniel dan danny",
        "david dave davy",
        "stephen steven steve stevie",
        "samuel sam sammy",
        "samantha sam sammy",
        "susan sue susie suzy",
        "patricia pat patsy tricia trish",
        "patrick pat paddy",
        "jennifer jen jenny",
        "deborah debora debbie debs deb",
        "rebecca becky becca",
        "victoria vicky vicki tori",
        "nicholas nick nicky",
        "benjamin ben benny",
        "matthew matt",
        "andrew andy drew",
        "henry harry hal",
        "mary molly polly",
        "sarah sara sally sadie",
        "charles charlie chas chuck",
        "charlotte lottie charlie",
        "frederick fred freddie freddy",
        "gerald gerry jerry",
        "kenneth ken kenny",
        "lawrence laurence larry laurie",
        "leonard len lenny",
        "peter pete",
        "philip phillip phil pip",
        "raymond ray",
        "ronald ron ronnie",
        "timothy tim timmy",
        "dorothy dot dotty dolly",
        "helen helena nell nellie",
        "eleanor elinor ellie nell nora",
        "jacqueline jackie jacqui",
        "abigail abby abbie gail",
        "gillian jillian gill jill",
        "penelope penny",
        "theresa teresa tess tessa terri",
        "isabel isabelle isobel izzy bella",
        "frances fran fanny",
        "francis frank frankie",
        "albert bert bertie al",
        "alfred alf alfie fred",
        "arthur art artie",
        "harold harry hal",
        "gregory greg",
        "douglas doug dougie",
        "donald don donnie",
        "angela angie",
        "barbara barb babs",
        "pamela pam",
        "kimberley kimberly kim",
        "natalie natasha tasha nat",
        "nathan nathaniel nat nate",
        "zachary zach zak",
        "mohammed muhammad mohammad mohamed muhammed",
    )
)
_GROUPS_BY_NAME: dict[str, frozenset[int]] = {}
for _index, _group in enumerate(NICKNAME_GROUPS):
    for _name in _group:
        _GROUPS_BY_NAME[_name] = _GROUPS_BY_NAME.get(_name, frozenset()) | {_index}

# Close spellings (Smith/Smyth, Steven/Stephen, Bloggs/Blogs): parts of at least this many
# letters, at this Jaro-Winkler similarity or within one edit (a transposition counts as one).
SIMILAR_MIN_LETTERS = 4
SIMILAR_JARO_WINKLER = 0.88

_SPLIT = re.compile(r"[\s\-\u2010\u2011\u2012\u2013\u2014]+")  # spaces and hyphens part names


def fold(value: str) -> str:
    """Letters only, case and accents folded ('Zoë O'Brien' -> 'zoeobrien'): the same rule as
    `domain.name_key`, so a key computed here matches the stored one."""
    return "".join(ch for ch in unicodedata.normalize("NFKD", value.casefold()) if ch.isalpha())


def family_key(family_name: str) -> str:
    """The family part of `domain.name_key` (indexed, to find near matches by family name)."""
    return fold(family_name)


@lru_cache(maxsize=4096)
def _tokens(value: str) -> tuple[str, ...]:
    # Cached: a referral's names are compared with every near candidate (up to 200), and
    # folding them each time was most of the comparison's cost. A tuple, so no caller can change it.
    tokens = [fold(part) for part in _SPLIT.split(value)]
    return tuple(token for token in tokens if token) or (fold(value),)


def names_equivalent(a: str, b: str) -> bool:
    """Whether two first names are forms of one another in the nickname table (or equal)."""
    a, b = fold(a), fold(b)
    if a == b:
        return True
    return bool(_GROUPS_BY_NAME.get(a, frozenset()) & _GROUPS_BY_NAME.get(b, frozenset()))


def _similar(a: str, b: str) -> bool:
    if a == b:
        return True
    if min(len(a), len(b)) < SIMILAR_MIN_LETTERS:
        return False
    return OSA.distance(a, b) <= 1 or JaroWinkler.similarity(a, b) >= SIMILAR_JARO_WINKLER


class NameReason(StrEnum):
    NICKNAME = "nickname"
    MIDDLE_NAME = "middle_name"  # a middle name added or dropped (or the person goes by it)
    HYPHENATED_SURNAME = "hyphenated_surname"  # part of a double-barrelled surname, or its parts reordered
    SIMILAR_SPELLING = "similar_spelling"
    SWAPPED = "given_family_swapped"


def _given_reasons(referred: tuple[str, ...], on_file: tuple[str, ...]) -> set[NameReason] | None:
    if referred == on_file:
        return set()
    reasons: set[NameReason] = set()
    if referred[0] != on_file[0]:
        if set(referred) <= set(on_file) or set(on_file) <= set(referred):
            return {NameReason.MIDDLE_NAME}  # known by a middle name, or one of them dropped
        if names_equivalent(referred[0], on_file[0]):
            reasons.add(NameReason.NICKNAME)
        elif _similar(referred[0], on_file[0]):
            reasons.add(NameReason.SIMILAR_SPELLING)
        else:
            return None
    if referred[1:] != on_file[1:]:
        reasons.add(NameReason.MIDDLE_NAME)
    return reasons


def _family_reasons(referred: tuple[str, ...], on_file: tuple[str, ...]) -> set[NameReason] | None:
    if "".join(referred) == "".join(on_file):
        return set()  # Smith-Jones = Smith Jones = SmithJones
    a, b = set(referred), set(on_file)
    if a & b and (a <= b or b <= a):
        return {NameReason.HYPHENATED_SURNAME}
    if _similar("".join(referred), "".join(on_file)):
        return {NameReason.SIMILAR_SPELLING}
    return None


def name_reasons(
    referred_given: str, referred_family: str, on_file_given: str, on_file_family: str
) -> frozenset[NameReason] | None:
    """How a name as referred relates to one on file: an empty set when they are the same (as
    `domain.name_key` folds them), the near-match reasons when they are forms of one another, or
    None when they are different names."""
    given_a, family_a = _tokens(referred_given), _tokens(referred_family)
    given_b, family_b = _tokens(on_file_given), _tokens(on_file_family)
    if "".join(given_a) == "".join(given_b) and "".join(family_a) == "".join(family_b):
        return frozenset()
    if "".join(given_a) == "".join(family_b) and "".join(family_a) == "".join(given_b):
        return frozenset({NameReason.SWAPPED})
    given = _given_reasons(given_a, given_b)
    family = _family_reasons(family_a, family_b)
    if given is None or family is None:
        return None
    return frozenset(given | family)


class DateRelation(StrEnum):
    SAME = "same"
    TRANSPOSED = "day_month_transposed"  # 03/04 for 04/03
    TYPO = "birth_date_typo"  # one digit wrong, or two neighbouring digits swapped
    DIFFERENT = "different"


def swapped_day_month(value: date) -> date | None:
    """The date with day and month exchanged, when that is another real date."""
    if value.day > 12 or value.day == value.month:
        return None
    try:
        return date(value.year, value.day, value.month)
    except ValueError:  # pragma: no cover - every day <= 12 is a month and every month has a 12th
        return None


def birth_date_relation(referred: date, on_file: date) -> DateRelation:
    if referred == on_file:
        return DateRelation.SAME
    if swapped_day_month(referred) == on_file:
        return DateRelation.TRANSPOSED
    if OSA.distance(referred.isoformat(), on_file.isoformat()) == 1:
        return DateRelation.TYPO
    return DateRelation.DIFFERENT


@dataclass(frozen=True)
class Demographics:
    """What identifies a person: as a referral gives it, or as the person on file holds it."""

    given_name: str
    family_name: str
    birth_date: date
    postcode: str | None
    nhs_number: str | None = None


@dataclass(frozen=True)
class Comparison:
    """A referral's demographics beside those of the person its NHS number matched."""

    birth_date: DateRelation
    name: frozenset[NameReason] | None  # None: a different name; empty: the same
    postcode_differs: bool

    @property
    def disagreeing(self) -> tuple[str, ...]:
        """Every field that differs, in a fixed order (birth_date, name, postcode)."""
        fields = []
        if self.birth_date is not DateRelation.SAME:
            fields.append("birth_date")
        if self.name is None or self.name:
            fields.append("name")
        if self.postcode_differs:
            fields.append("postcode")
        return tuple(fields)

    @property
    def needs_review(self) -> bool:
        """A date of birth or a name that disagrees: identity to be confirmed. A postcode alone
        is information (people move; the referral is routed on the postcode it gives)."""
        return bool({"birth_date", "name"} & set(self.disagreeing))

    def kinds(self) -> dict[str, list[str]]:
        """What each disagreeing field's difference looks like (no values, only kinds)."""
        found: dict[str, list[str]] = {}
        if self.birth_date is not DateRelation.SAME:
            found["birth_date"] = [self.birth_date.value]
        if self.name is None:
            found["name"] = ["different"]
        elif self.name:
            found["name"] = sorted(reason.value for reason in self.name)
        if self.postcode_differs:
            found["postcode"] = ["different"]
        return found


def compare(on_file: Demographics, referred: Demographics) -> Comparison:
    """The referral's demographics against the person on file. Never changes either."""
    return Comparison(
        birth_date=birth_date_relation(referred.birth_date, on_file.birth_date),
        name=name_reasons(referred.given_name, referred.family_name, on_file.given_name, on_file.family_name),
        postcode_differs=bool(
            referred.postcode and on_file.postcode and referred.postcode != on_file.postcode
        ),
    )


# Name patterns strong enough to flag alongside a date of birth that is itself only near.
_PATTERNS = frozenset(
    {NameReason.NICKNAME, NameReason.MIDDLE_NAME, NameReason.HYPHENATED_SURNAME, NameReason.SWAPPED}
)


def near_match(
    referred: Demographics, candidate: Demographics, *, ignore_nhs: bool = False
) -> tuple[str, ...] | None:
    """Why `candidate` may be the person `referred` describes, or None when they are not alike.

    Reasons come from a fixed vocabulary: same_name / same_birth_date / same_postcode /
    different_postcode, and the near kinds (day_month_transposed, birth_date_typo, nickname,
    middle_name, hyphenated_surname, similar_spelling, given_family_swapped). Two people with
    different NHS numbers are different people (unless `ignore_nhs`, when the referral's own NHS
    number is in doubt). Near on both the date of birth and the name is flagged only for a
    recognised name pattern, not for a spelling that is merely close."""
    if (
        not ignore_nhs
        and referred.nhs_number
        and candidate.nhs_number
        and referred.nhs_number != candidate.nhs_number
    ):
        return None
    born = birth_date_relation(referred.birth_date, candidate.birth_date)
    if born is DateRelation.DIFFERENT:
        return None
    name = name_reasons(
        referred.given_name, referred.family_name, candidate.given_name, candidate.family_name
    )
    if name is None:
        return None
    if born is not DateRelation.SAME and not name <= _PATTERNS:
        return None
    reasons = ["same_birth_date" if born is DateRelation.SAME else born.value]
    reasons.extend(["same_name"] if not name else sorted(reason.value for reason in name))
    if referred.postcode and candidate.postcode:
        reasons.append("same_postcode" if referred.postcode == candidate.postcode else "different_postcode")
    return tuple(reasons)


def is_exact(reasons: Iterable[str]) -> bool:
    """Near-match reasons that say: same name, same date of birth, same postcode."""
    return set(reasons) == {"same_name", "same_birth_date", "same_postcode"}


def _age(birth: date, day: date) -> int | None:
    return age_on(birth, day) if day >= birth else None


def identity_rules(
    comparison: Comparison | None,
    referred_birth_date: date,
    on_file_birth_date: date | None,
    referral_day: date,
    duplicates: int = 0,
) -> list[Rule]:
    """The rules the clinician sees about identity, beside the screening rules: which date of
    birth screening used when identity is in doubt, and what was flagged."""
    rules: list[Rule] = []
    if comparison is not None and comparison.needs_review:
        fields = [f for f in comparison.disagreeing if f != "postcode"]
        what = " and ".join("date of birth" if f == "birth_date" else "name" for f in fields)
        age = _age(referred_birth_date, referral_day)
        text = f"NHS number matches a person on file whose {what} differs"
        if "birth_date" in fields:
            kind = comparison.birth_date
            if kind is DateRelation.TRANSPOSED:
                text += " (day and month transposed)"
            elif kind is DateRelation.TYPO:
                text += " (one digit apart)"
            other = _age(on_file_birth_date, referral_day) if on_file_birth_date else None
            on_file = (
                f"age {other} on the date of birth on file"
                if other is not None
                else "the date of birth on file is after the referral"
            )
            text += f": screened on the date of birth as referred (age {age}; {on_file})"
        else:
            text += f": screened on the details as referred (age {age})"
        text += "; identity to be confirmed before the person's record is relied on."
        rules.append(Rule("I-identity-review", text))
    elif comparison is not None and comparison.postcode_differs:
        rules.append(
            Rule(
                "I-postcode-differs",
                "The postcode as referred differs from the one on file (people move): screened on the "
                "postcode as referred; the person's record is unchanged until their details are updated.",
            )
        )
    if duplicates:
        people = "person" if duplicates == 1 else "people"
        rules.append(
            Rule(
                "I-possible-duplicate",
                f"{duplicates} {people} on file may be this person (near match on name and date of "
                "birth): flagged for review, never merged.",
            )
        )
    return rules
