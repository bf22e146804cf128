"""The home page: what each person's roles let them do, and nothing else."""

from __future__ import annotations

from gateway.web.roles import Role
from tests.web.conftest import WebSuite


async def test_home_names_the_person_and_their_organisation(web_suite: WebSuite) -> None:
    await web_suite.person(
        "sam.analyst@lsc-icb.example", [Role.ICB_ANALYST], organisation="QE1", name="Sam Analyst"
    )
    async with web_suite.browser() as browser:
        await browser.sign_in("sam.analyst@lsc-icb.example")
        home = await browser.get("/app/")
    assert home.status_code == 200, home.text[:300]
    assert "Sam Analyst" in home.text and "QE1" in home.text
