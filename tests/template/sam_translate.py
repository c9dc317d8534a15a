"""Runs in .venv-sam, not the project's venv: SAM-transform template.yaml offline and print the
CloudFormation JSON (what CloudFormation's own transform would produce).

    .venv-sam/bin/python tests/template/sam_translate.py template.yaml [params.json]

Local CodeUri/ContentUri paths become S3 URIs first, as `sam package` would make them; a managed
policy lookup (the only step that would call AWS) is refused, since the template names none.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

_URI = {"AWS::Serverless::Function": "CodeUri", "AWS::Serverless::LayerVersion": "ContentUri"}


class _NoManagedPolicies:
    def load(self) -> dict[str, str]:
        raise RuntimeError("the SAM transform asked IAM for managed policies; there should be none")


def main(argv: list[str]) -> int:
    template: dict[str, Any] = yaml_parse(Path(argv[1]).read_text())
    params: dict[str, Any] = json.loads(Path(argv[2]).read_text()) if len(argv) > 2 else {}
    for name, resource in template.get("Resources", {}).items():
        prop = _URI.get(resource.get("Type", ""))
        if prop and isinstance(resource.get("Properties", {}).get(prop), str):
            resource["Properties"][prop] = f"s3://oomcheck-artifacts/{name}.zip"
    json.dump(transform(template, params, _NoManagedPolicies()), sys.stdout, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
