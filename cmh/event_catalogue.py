"""`docs/events.md` from the event contracts (`shared/event_catalogue.py`) and every process's
durables (`cmh.serving.bus_plan`): `python -m cmh.event_catalogue --write`, or `--check`."""

from __future__ import annotations

import argparse
import sys

from cmh.serving import bus_plan
from shared.event_catalogue import DOC_PATH, render


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help=f"write {DOC_PATH.name}")
    group.add_argument("--check", action="store_true", help=f"fail if {DOC_PATH.name} is out of date")
    args = parser.parse_args(argv)
    text = render(bus_plan())
    if args.write:
        DOC_PATH.write_text(text)
    elif args.check:
        if not DOC_PATH.exists() or DOC_PATH.read_text() != text:
            print(f"{DOC_PATH} is out of date: python -m cmh.event_catalogue --write", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
