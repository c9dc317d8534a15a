"""Celery's Redis result backend: ``parse`` reads records from their bytes (pure), ``readers``
scans one server (the ``probe.lua`` script, or the same probes pipelined from the client), and
``scan`` walks every server of the backend with a resumable cursor."""

from oomcheck.sources.results.parse import (
    HEAD_BYTES,
    KEY_STEM,
    PROBE_BYTES,
    TAIL_BYTES,
    interpret_record,
    lost_reason,
    partial_object,
    probe_status,
    written_at,
)
from oomcheck.sources.results.readers import SCAN_SCRIPT
from oomcheck.sources.results.scan import RedisResultScanner, ResultScan

__all__ = [
    "HEAD_BYTES",
    "KEY_STEM",
    "PROBE_BYTES",
    "SCAN_SCRIPT",
    "TAIL_BYTES",
    "RedisResultScanner",
    "ResultScan",
    "interpret_record",
    "lost_reason",
    "partial_object",
    "probe_status",
    "written_at",
]
