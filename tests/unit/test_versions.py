"""make prune-versions: versions no alias names are deleted, the newest KEEP and every aliased
one kept, on moto's Lambda."""

from __future__ import annotations

import io
import zipfile

import boto3
import pytest
from moto import mock_aws

from oomcheck.entry import versions


def _zip(text: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("app.py", text)
    return buf.getvalue()


@pytest.fixture
def function() -> object:
    with mock_aws():
        iam = boto3.client("iam")
        role = iam.create_role(RoleName="r", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        client = boto3.client("lambda")
        client.create_function(
            FunctionName="checker",
            Runtime="python3.13",
            Role=role,
            Handler="app.handler",
            Code={"ZipFile": _zip("v0")},
        )
        for n in range(1, 6):  # five deploys: versions 1..5
            client.update_function_code(FunctionName="checker", ZipFile=_zip(f"v{n}"))
            client.publish_version(FunctionName="checker")
        client.create_alias(FunctionName="checker", Name="live", FunctionVersion="4")
        yield client


def _left(client: object) -> list[str]:
    page = client.list_versions_by_function(FunctionName="checker")  # type: ignore[attr-defined]
    return sorted(v["Version"] for v in page["Versions"] if v["Version"] != "$LATEST")


def test_versions_no_alias_names_are_pruned_the_newest_kept(function: object) -> None:
    assert versions.stale_versions(function, "checker", keep=1) == ["1", "2", "3"]
    assert versions.prune(function, "checker", keep=1) == ["1", "2", "3"]
    assert _left(function) == ["4", "5"]  # the alias's, and the newest unaliased


def test_a_prune_is_bounded(function: object) -> None:
    assert versions.prune(function, "checker", keep=0, limit=2) == ["1", "2"]
    assert _left(function) == ["3", "4", "5"]
