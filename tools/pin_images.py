"""Pin deploy/'s base images by digest: deploy/Dockerfile's `ARG PYTHON_IMAGE=` and the `image:` of
deploy/compose.yaml's nats and postgres services, each `tag` becoming `tag@sha256:...`.

A build tool (`make pin-image`), not run-time code. The digest is the registry's for the tag now (a
multi-platform index, so one pin serves amd64 and arm64), read with `docker buildx imagetools
inspect`; it needs Docker with buildx and the registry. Usage, from the repository root::

    python -m tools.pin_images           # print each reference and its digest, change nothing
    python -m tools.pin_images --write   # write them in place (then review and commit)

A reference already pinned is resolved again from its tag: running it moves the pins to the tags'
current images (deliberately, in a reviewable commit).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).parents[1]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
COMPOSE = ROOT / "deploy" / "compose.yaml"

DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# (file, the line holding a reference: group 1 before it, group 2 the tag, group 3 an old digest)
PINNED = [
    (DOCKERFILE, re.compile(r"^(ARG PYTHON_IMAGE=)([^@\s]+)(@sha256:[0-9a-f]{64})?$", re.M)),
    (COMPOSE, re.compile(r"^(\s+image: )((?:nats|postgres):[^@\s]+)(@sha256:[0-9a-f]{64})?$", re.M)),
]


def registry_digest(tag: str) -> str:
    """The digest the registry serves for `tag` (its index, for every platform)."""
    done = subprocess.run(  # noqa: S603 - a fixed command, the tag from our own files
        ["docker", "buildx", "imagetools", "inspect", tag, "--format", "{{.Manifest.Digest}}"],  # noqa: S607
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    digest = done.stdout.strip()
    if not DIGEST.fullmatch(digest):
        raise RuntimeError(f"{tag}: no digest in {done.stdout!r} {done.stderr!r}")
    return digest


def pin(text: str, pattern: re.Pattern[str], resolve: Callable[[str], str]) -> tuple[str, list[str]]:
    """`text` with every reference `pattern` finds pinned to resolve(tag); and the new references."""
    pinned: list[str] = []

    def replace(match: re.Match[str]) -> str:
        reference = f"{match[2]}@{resolve(match[2])}"
        pinned.append(reference)
        return f"{match[1]}{reference}"

    return pattern.sub(replace, text), pinned


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write the pins in place")
    args = parser.parse_args(argv)
    for path, pattern in PINNED:
        try:
            text, pinned = pin(path.read_text(), pattern, registry_digest)
        except (OSError, subprocess.SubprocessError, RuntimeError) as error:
            detail = getattr(error, "stderr", None) or error
            print(f"pin_images: cannot read a digest (Docker with buildx, and the registry): {detail}")
            return 1
        for reference in pinned:
            print(f"{path.relative_to(ROOT)}: {reference}")
        if args.write:
            path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
