"""boto3 clients built one way: adaptive retries, short timeouts, endpoints from AWS_ENDPOINT_URL.

Endpoints are never a setting of ours: boto3 reads the standard ``AWS_ENDPOINT_URL`` (and the
per-service ``AWS_ENDPOINT_URL_<SERVICE>``) itself, which is how the demo and the tests reach moto.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from botocore.config import Config


@cache
def retry_config() -> Config:
    from botocore.config import Config

    # Adaptive mode rate-limits the client itself after throttling, which is what a 5 TPS quota
    # (FilterLogEvents) needs; timeouts stay well under the Lambda's own.
    return Config(
        retries={"mode": "adaptive", "max_attempts": 6},
        connect_timeout=3,
        read_timeout=10,
        tcp_keepalive=True,
    )


def client(service: str, region: str | None = None) -> Any:
    import boto3

    session: Any = boto3.session.Session()
    return session.client(service, region_name=region, config=retry_config())
