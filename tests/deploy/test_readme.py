"""deploy/README.md says what every file in deploy/ is."""

from __future__ import annotations

from pathlib import Path

DEPLOY = Path(__file__).parents[2] / "deploy"


def test_every_deploy_file_is_described() -> None:
    readme = (DEPLOY / "README.md").read_text()
    undescribed = []
    for path in sorted(DEPLOY.rglob("*")):
        relative = path.relative_to(DEPLOY)
        if path.is_dir() or "secrets" in relative.parts or "__pycache__" in relative.parts:
            continue
        if relative.name == "README.md":
            continue
        if relative.parts[:3] == ("kubernetes", "base", "processes"):
            relative = Path("kubernetes/base/processes/*.yaml")  # generated, described together
        elif relative.parts[:2] == ("kubernetes", "overlays"):
            relative = Path(*relative.parts[:3])  # an overlay is described as a folder
            if f"`{relative.as_posix()}/`" in readme:
                continue
        if f"`{relative.as_posix()}`" not in readme:
            undescribed.append(relative.as_posix())
    assert undescribed == []
