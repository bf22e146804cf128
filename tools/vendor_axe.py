"""Vendor axe-core (the npm package `axe-core`, MPL-2.0) into tests/web/vendor/ for the browser
tests' accessibility checks (tests/web/browser/test_accessibility.py): `axe.min.js` as the package
ships it, unchanged, with its licence, its third-party notices and a VENDORED.md.

For tests only: nothing the suite serves loads it (the tests inject it into the page under test).
A build tool (`make frontend`, beside tools/vendor_frontend.py), not run-time code. The tarball
comes from the npm registry and must match the integrity recorded here (the registry's
`dist.integrity`, an SRI sha512) before anything is read from it; to move to a new release, change
VERSION and INTEGRITY together (`npm view axe-core@X dist.integrity`), run `make frontend`, run the
browser tests and review the diff. Usage::

    python -m tools.vendor_axe              # into tests/web/vendor/
    python -m tools.vendor_axe --dest DIR
"""

from __future__ import annotations

import io
import sys
import tarfile
from pathlib import Path

from tools.vendor_frontend import VendorError, command, download, sri_sha512, write

PACKAGE = "axe-core"
VERSION = "4.14.1"
INTEGRITY = "sha512-FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtuFooJpZe37OgudVGtQ=="
TARBALL_URL = f"https://registry.npmjs.org/{PACKAGE}/-/{PACKAGE}-{VERSION}.tgz"

ROOT = Path(__file__).parents[1]
DEST = ROOT / "tests" / "web" / "vendor"
# Inside the tarball, under package/: copied as they are.
TAKEN = ("axe.min.js", "LICENSE", "LICENSE-3RD-PARTY.txt")


def verify(tarball: bytes, integrity: str = INTEGRITY) -> None:
    actual = sri_sha512(tarball)
    if actual != integrity:
        raise VendorError(f"{PACKAGE}@{VERSION}: integrity {actual} is not the recorded {integrity}")


def select(tarball: bytes) -> dict[str, bytes]:
    """The files taken, by name, read in memory from the tarball (never extracted)."""
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        for name in TAKEN:
            try:
                member = archive.getmember(f"package/{name}")
            except KeyError:
                raise VendorError(f"package/{name} is not in {PACKAGE}@{VERSION}") from None
            extracted = archive.extractfile(member) if member.isfile() else None
            if extracted is None:
                raise VendorError(f"package/{name} is not a file")
            files[name] = extracted.read()
    banner = files["axe.min.js"][:200].decode(errors="replace")
    if f"axe v{VERSION}" not in banner:
        raise VendorError(f"axe.min.js does not announce version {VERSION}: {banner[:40]!r}")
    files["VENDORED.md"] = _vendored_md(files).encode()
    return files


def _vendored_md(files: dict[str, bytes]) -> str:
    listing = "\n".join(f"| `{name}` | {len(body):,} |" for name, body in sorted(files.items()))
    return f"""# axe-core, vendored for the browser tests

Written by `tools/vendor_axe.py` (`make frontend`): do not edit these files by hand.

- Package: [`{PACKAGE}`](https://www.npmjs.com/package/{PACKAGE}) {VERSION}, from the npm registry
  ({TARBALL_URL})
- Integrity (the registry's `dist.integrity`, checked before anything is read): `{INTEGRITY}`
- Licence: MPL-2.0 (Deque Systems); the text is in [LICENSE](LICENSE), and the notices of the
  MIT-licensed code it bundles in [LICENSE-3RD-PARTY.txt](LICENSE-3RD-PARTY.txt), both from the
  package. The files are unmodified, so MPL-2.0's source availability is met by the package
  itself (the registry's tarball above, and github.com/dequelabs/axe-core).

## What it is for

Tests only: tests/web/browser/ injects `axe.min.js` into each page under test (Playwright's
`page.add_script_tag(content=...)`, in a context that bypasses the page's Content-Security-
Policy) and fails on serious or critical WCAG 2.2 AA violations. The gateway never serves it, and
the suite's package does not include it.

## Files

| File | Bytes |
| --- | ---: |
{listing}
"""


def vendor(dest: Path = DEST, tarball: bytes | None = None) -> dict[str, bytes]:
    tarball = download(TARBALL_URL) if tarball is None else tarball
    verify(tarball)
    files = select(tarball)
    write(files, dest)
    return files


def main(argv: list[str] | None = None) -> int:
    return command(
        argv,
        name="vendor_axe",
        description=__doc__.splitlines()[0],
        package=PACKAGE,
        version=VERSION,
        default_dest=DEST,
        vendor=vendor,
    )


if __name__ == "__main__":
    sys.exit(main())
