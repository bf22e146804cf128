"""Vendor NHS.UK frontend (the npm package `nhsuk-frontend`, MIT) into gateway/web/static/nhsuk/:
the compiled, minified stylesheet and script and the assets they and the page head name, nothing
else (no Sass, no source maps, no component sources).

A build tool (`make frontend`), not run-time code: the gateway serves the committed copy and never
fetches anything at run time. The tarball comes from the npm registry and must match the
integrity recorded here (the registry's `dist.integrity`, an SRI sha512) before anything is read
from it; to move to a new release, change VERSION and INTEGRITY together (`npm view
nhsuk-frontend@X dist.integrity`), run `make frontend`, and review the diff. Usage::

    python -m tools.vendor_frontend              # into gateway/web/static/nhsuk/
    python -m tools.vendor_frontend --dest DIR   # elsewhere (tests/web reproduces the copy)

What is changed in the copy (and said again in the VENDORED.md it writes):

- The stylesheet's `@font-face` rules are removed. They load the Frutiger webfont from
  https://assets.nhs.uk, and the suite never fetches from a CDN (its pages' Content-Security-
  Policy would refuse it anyway). The font stack the stylesheet declares, `Frutiger W01, arial,
  sans-serif`, then falls back to Arial, as NHS.UK frontend documents for when the font is absent.
- Its `url(/assets/...)` references become `url(assets/...)`: relative to the stylesheet, so they
  resolve under the gateway's `/app/static/nhsuk/` rather than at the site's root.
- The `sourceMappingURL` comments are removed (the maps are not copied).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import re
import shutil
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import httpx

PACKAGE = "nhsuk-frontend"
VERSION = "10.6.1"
INTEGRITY = "sha512-PZorqQZjZx/A26yJoskCL9z0ib6AtkAyF0o4K/RHr8zRrJyXrUOCnMbjy0VNXsGO4tfTNMwqlkwATKs4a0xayw=="
TARBALL_URL = f"https://registry.npmjs.org/{PACKAGE}/-/{PACKAGE}-{VERSION}.tgz"

ROOT = Path(__file__).parents[1]
DEST = ROOT / "gateway" / "web" / "static" / "nhsuk"
DIST = "package/dist/nhsuk/"  # inside the tarball
# The versioned file names the package ships: a new release is a new URL, so the day-long cache
# the gateway allows (gateway/web/static.py) never serves a stale stylesheet after an upgrade.
STYLESHEET = f"nhsuk-frontend-{VERSION}.min.css"
SCRIPT = f"nhsuk-frontend-{VERSION}.min.js"
# What the page head links to (NHS.UK frontend's template.njk `headIcons` block), beside what
# the stylesheet names and the web app manifest's icons.
HEAD_ASSETS = ("assets/images/favicon.ico", "assets/images/favicon.svg", "assets/images/nhsuk-icon-mask.svg",
               "assets/images/nhsuk-icon-180.png", "assets/manifest.json")  # fmt: skip

FONT_FACE = re.compile(r"@font-face\{[^{}]*\}")
ROOT_ASSET_URL = re.compile(r"url\(/assets/")
CSS_URL = re.compile(r"url\(([^)]*)\)")
CSS_SOURCE_MAP = re.compile(r"\s*/\*# sourceMappingURL=[^*]*\*/\s*$")
JS_SOURCE_MAP = re.compile(r"\s*//# sourceMappingURL=\S*\s*$")
REMOTE_URL = re.compile(rb"https?://")

# The package's licence (MIT): its repository's LICENSE file. The npm tarball carries none, only
# `"license": "MIT"` in package.json, so its text is kept here and copied beside the files.
LICENSE = """\
MIT License

Copyright (c) 2019 NHS.UK

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""


class VendorError(RuntimeError):
    """The tarball is not the recorded one, or its contents are not what this tool expects."""


def sri_sha512(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def download(url: str = TARBALL_URL, timeout: float = 60.0) -> bytes:
    """The package tarball from the npm registry (httpx.HTTPError when it cannot be reached)."""
    response = httpx.get(url, timeout=timeout, follow_redirects=True)
    response.raise_for_status()
    return response.content


def verify(tarball: bytes, integrity: str = INTEGRITY) -> None:
    actual = sri_sha512(tarball)
    if actual != integrity:
        raise VendorError(f"{PACKAGE}@{VERSION}: integrity {actual} is not the recorded {integrity}")


def _members(tarball: bytes) -> dict[str, bytes]:
    """The regular files under dist/nhsuk/, by their path below it; read in memory, never
    extracted (a member's name cannot write outside anything)."""
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        for member in archive.getmembers():
            if member.isfile() and member.name.startswith(DIST):
                extracted = archive.extractfile(member)
                if extracted is not None:
                    files[member.name.removeprefix(DIST)] = extracted.read()
    return files


def _stylesheet(css: str) -> str:
    css, fonts = FONT_FACE.subn("", css)
    if fonts == 0:
        raise VendorError("no @font-face rule found: check how this release loads its webfont")
    css = ROOT_ASSET_URL.sub("url(assets/", css)
    return CSS_SOURCE_MAP.sub("", css) + "\n"


def _script(js: str) -> str:
    return JS_SOURCE_MAP.sub("", js) + "\n"


def _referenced_assets(css: str, manifest: bytes) -> set[str]:
    named = {target.strip("'\"") for target in CSS_URL.findall(css)}
    assets = {target for target in named if not target.startswith("data:")}
    icons = json.loads(manifest)["icons"]
    assets |= {"assets/" + str(icon["src"]) for icon in icons}
    return assets | set(HEAD_ASSETS)


def select(tarball: bytes) -> dict[str, bytes]:
    """What the pages need, by path below the destination, changed as the module says."""
    files = _members(tarball)
    for needed in (STYLESHEET, SCRIPT, "assets/manifest.json"):
        if needed not in files:
            raise VendorError(f"{DIST}{needed} is not in the package")
    css = _stylesheet(files[STYLESHEET].decode())
    out: dict[str, bytes] = {STYLESHEET: css.encode(), SCRIPT: _script(files[SCRIPT].decode()).encode()}
    for asset in sorted(_referenced_assets(css, files["assets/manifest.json"])):
        if asset not in files:
            raise VendorError(f"the stylesheet or head names {asset}, which the package does not hold")
        out[asset] = files[asset]
    for name, body in out.items():
        if name.endswith((".css", ".js")) and REMOTE_URL.search(body):
            raise VendorError(f"{name} still names a remote URL: the pages must fetch nothing elsewhere")
    out["LICENSE"] = LICENSE.encode()
    out["VENDORED.md"] = _vendored_md(out).encode()
    return out


def _vendored_md(files: dict[str, bytes]) -> str:
    listing = "\n".join(f"| `{name}` | {len(body):,} |" for name, body in sorted(files.items()))
    total = sum(len(body) for body in files.values())
    return f"""# NHS.UK frontend, vendored

Written by `tools/vendor_frontend.py` (`make frontend`): do not edit these files by hand.

- Package: [`{PACKAGE}`](https://www.npmjs.com/package/{PACKAGE}) {VERSION}, from the npm registry
  ({TARBALL_URL})
- Integrity (the registry's `dist.integrity`, checked before anything is read): `{INTEGRITY}`
- Licence: MIT, NHS.UK frontend's own; the text is in [LICENSE](LICENSE) beside this file (the npm
  tarball carries none; it is the text of the project's repository, github.com/nhsuk/nhsuk-frontend).

## What was taken

Only what the gateway's pages load: the compiled, minified stylesheet and script (`dist/nhsuk/`,
the versioned file names the package ships) and the assets the stylesheet and the page head
name (icons, favicons and the web app manifest with its icons). No Sass, no source maps, no
component sources or templates (the suite's own Jinja templates write NHS.UK markup).

## What was changed

- The stylesheet's `@font-face` rules are removed: they load the Frutiger webfont from
  `https://assets.nhs.uk`, and the suite never fetches from a CDN. The stylesheet's font stack
  (`Frutiger W01, arial, sans-serif`) then falls back to Arial, as NHS.UK frontend documents.
- `url(/assets/...)` in the stylesheet becomes `url(assets/...)`, relative to the stylesheet, so
  the icons resolve under `/app/static/nhsuk/`.
- The `sourceMappingURL` comments are removed (the maps are not copied).

## Files

| File | Bytes |
| --- | ---: |
{listing}

Total, with this file's own size left out: {total:,} bytes.
"""


def write(files: dict[str, bytes], dest: Path) -> None:
    """Replace `dest` with exactly `files` (nothing left over from an older release)."""
    if dest.exists():
        shutil.rmtree(dest)
    for name, body in files.items():
        path = dest / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)


def vendor(dest: Path = DEST, tarball: bytes | None = None) -> dict[str, bytes]:
    tarball = download() if tarball is None else tarball
    verify(tarball)
    files = select(tarball)
    write(files, dest)
    return files


def command(
    argv: list[str] | None,
    *,
    name: str,
    description: str,
    package: str,
    version: str,
    default_dest: Path,
    vendor: Callable[[Path], dict[str, bytes]],
) -> int:
    """The command line of a vendoring tool (this one and tools/vendor_axe.py): `--dest`, one
    line of what was written, exit 1 with the reason when the registry or the integrity fails."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--dest", type=Path, default=default_dest, help="where to write (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    try:
        files = vendor(args.dest)
    except (httpx.HTTPError, VendorError) as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1
    total = sum(len(body) for body in files.values())
    print(f"{package} {version}: {len(files)} files, {total:,} bytes in {args.dest}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return command(
        argv,
        name="vendor_frontend",
        description=__doc__.splitlines()[0],
        package=PACKAGE,
        version=VERSION,
        default_dest=DEST,
        vendor=vendor,
    )


if __name__ == "__main__":
    sys.exit(main())
