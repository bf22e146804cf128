"""The README documents every setting and opens with the two commands."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices

from shared.settings import Settings

README = (Path(__file__).parents[1] / "README.md").read_text()


def variable_of(name: str) -> str:
    """The environment variable a setting is read from: `CMH_<NAME>`, or the first of its aliases
    (the tracing settings also answer to OpenTelemetry's standard names)."""
    alias = Settings.model_fields[name].validation_alias
    return str(alias.choices[0]) if isinstance(alias, AliasChoices) else f"CMH_{name.upper()}"


def test_every_setting_is_documented() -> None:
    missing = [name for name in Settings.model_fields if f"`{variable_of(name)}`" not in README]
    assert missing == []


def test_readme_opens_with_the_two_commands() -> None:
    first_block = README.split("```sh", 1)[1].split("```", 1)[0]
    assert [line.split()[:2] for line in first_block.strip().splitlines()] == [
        ["make", "run"],
        ["make", "test"],
    ]
