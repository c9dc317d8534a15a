"""Run inside the built layer: an interpreter started with -I -S whose path holds only the layer's
``python/`` folder and the function's code, as Lambda lays them out (/opt/python, /var/task).

Imports the handler and every transport and client the checker can load, then runs the handler
once for the event named on the command line; prints one JSON object on stdout.

    python -I -S probe.py LAYER_PYTHON_DIR FUNCTION_DIR EVENT_FILE
"""

import importlib
import json
import pkgutil
import sys
import time
import uuid

layer, function, event_file = sys.argv[1:4]
sys.path[:0] = [layer, function]

# What a run can load, by the broker and backend URLs it is given and the settings it reads.
MODULES = [
    "kombu.transport.redis",  # redis:// and rediss:// brokers (needs packaging, hiredis)
    "kombu.transport.pyamqp",  # amqp:// brokers
    "amqp",
    "redis",
    "redis.cluster",
    "hiredis",
    "celery.backends.redis",
    "boto3",
    "aws_lambda_powertools.utilities.parameters",
    "aws_lambda_powertools.utilities.batch",
    "aws_lambda_powertools.utilities.data_classes",
]
# The library's modules, but the demo's (it needs moto and workers, which the layer does not ship).
import oomcheck  # noqa: E402

LIBRARY = [
    info.name
    for info in pkgutil.walk_packages(oomcheck.__path__, "oomcheck.")
    if not info.name.startswith("oomcheck.demo")
]

imported = {}
for name in ["app", *MODULES, *LIBRARY]:
    try:
        module = importlib.import_module(name)
        imported[name] = getattr(module, "__file__", None) or ""
    except Exception as exc:
        imported[name] = f"{type(exc).__name__}: {exc}"

outside = {
    name: path
    for name, path in imported.items()
    if path
    and not path.startswith((layer, function))
    and ("site-packages" in path or "dist-packages" in path)
}
for client in ("dynamodb", "sns", "logs", "sqs", "ssm", "secretsmanager", "events"):
    import boto3

    try:
        boto3.client(client)
        imported[f"boto3.client({client})"] = "ok"
    except Exception as exc:
        imported[f"boto3.client({client})"] = f"{type(exc).__name__}: {exc}"


class Context:
    """The part of the Lambda context the handler and Powertools read."""

    function_name = "oomcheck-layer-test"
    function_version = "$LATEST"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:oomcheck-layer-test"
    aws_request_id = str(uuid.uuid4())
    log_group_name = "/aws/lambda/oomcheck-layer-test"
    log_stream_name = "layer-test"

    def __init__(self, timeout_s: float) -> None:
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


with open(event_file) as handle:
    event = json.load(handle)
real_stdout = sys.stdout
sys.stdout = sys.stderr  # the handler's logs and metrics; stdout carries the result alone
try:
    result = sys.modules["app"].handler(event, Context(30.0))
    error = None
except Exception as exc:
    result, error = None, f"{type(exc).__name__}: {exc}"
sys.stdout = real_stdout
print(
    json.dumps(
        {
            "python": sys.version.split()[0],
            "path": sys.path,
            "imported": imported,
            "outside": outside,
            "result": result,
            "error": error,
        },
        default=str,
    )
)
