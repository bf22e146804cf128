"""A client generated from the gateway's merged OpenAPI builds cleanly (issue 20 §3): the
document `openapi-python-client` reads has no duplicate schema titles, no reference it cannot
resolve and no operation it must skip, and the package it writes imports. Offline: the document
is built in process and the generator reads it from a file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.shared.test_openapi_truth import merged_document

PACKAGE = "cmh_suite_client"
# The generator's own choices, not the document's: no formatter run afterwards (the generated
# code is not ours to lint), and the bulk export's NDJSON files read as bytes.
CONFIG = """\
post_hooks: []
content_type_overrides:
  application/fhir+ndjson: application/octet-stream
"""


def test_a_generated_client_builds_without_warnings_and_imports(tmp_path: Path) -> None:
    document = tmp_path / "openapi.json"
    document.write_text(json.dumps(merged_document()))
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    generated = subprocess.run(
        [
            sys.executable, "-m", "openapi_python_client", "generate", "--path", str(document),
            "--config", str(config), "--meta", "none", "--output-path", str(tmp_path / PACKAGE),
        ],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    output = generated.stdout + generated.stderr
    assert generated.returncode == 0, output
    assert "Warning" not in output and "WARNING" not in output, output
    modules = sorted(
        ".".join(path.relative_to(tmp_path).with_suffix("").parts)
        for path in (tmp_path / PACKAGE / "api").rglob("*.py")
        if path.name != "__init__.py"
    )
    assert len(modules) > 50
    imported = subprocess.run(
        [
            sys.executable, "-c",
            "import importlib, sys; [importlib.import_module(m) for m in sys.argv[1:]]; "
            f"from {PACKAGE} import AuthenticatedClient, Client",
            *modules,
        ],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
