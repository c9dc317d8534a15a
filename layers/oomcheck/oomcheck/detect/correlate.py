"""Tie exit evidence (ECS task stops, Container Insights records, kernel OOM lines) to workers.

Pure. A Celery nodename is ``name@host``; ``host`` is whatever the worker's hostname was, which
on AWS is usually one of:
- EC2 / ECS on EC2 with awsvpc: ``ip-10-0-1-5`` or ``ip-10-0-1-5.eu-west-1.compute.internal``,
  which encodes the private IP an ECS task-stopped event carries;
- EKS: the pod name, which Container Insights records carry;
- EC2 with bridge networking: the container's Docker id (12 hex digits), which an ECS event
  carries as the container's runtime id;
- anything else: then ``OOMCHECK_WORKER_MAP`` maps evidence hosts to nodenames.

Both sides are compared in every form they may take: an EC2 name and the private IP it encodes
are one host, and so are ``ip-10-0-1-5`` and ``ip-10-0-1-5.eu-west-1.compute.internal``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from oomcheck.model import ExitEvidence

_EC2_HOST = re.compile(r"^ip-(\d{1,3})-(\d{1,3})-(\d{1,3})-(\d{1,3})(?:\.|$)")
_IPV4 = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")
# Process names a Celery worker shows in a kernel OOM line (comm is cut to 15 characters, and
# setproctitle turns a pool child into "[celeryd: celer").
_CELERY_COMMS = ("celery", "python", "[celeryd", "celeryd")


@dataclass(frozen=True, slots=True)
class WorkerIdentity:
    name: str
    pid: int | None = None
    pool_pids: tuple[int, ...] = ()
    keys: frozenset[str] = field(default_factory=frozenset)

    def host_keys(self) -> frozenset[str]:
        return self.keys or host_keys(self.name)

    def bare_host(self) -> str | None:
        """The worker's host when it is a name without a domain (``worker-1``), else None."""
        if self.keys:
            return None
        host = _host_of(self.name)
        return host if host and "." not in host else None


def host_keys(nodename: str) -> frozenset[str]:
    """Every string a piece of evidence may use for this worker's host, lower-cased."""
    host = _host_of(nodename)
    keys = {nodename.lower(), *host_forms(host)}
    if host and not _IPV4.match(host):
        keys.add(host.split(".", 1)[0])
    return frozenset(k for k in keys if k)


def host_forms(host: str) -> frozenset[str]:
    """One host name in the forms that name the same machine: itself, and the private IPv4
    address an EC2 name encodes or the EC2 name (``ip-10-0-1-5``) an address gives. An address
    is never cut at its dots: "10" is not a host."""
    host = host.strip().lower().rstrip(".")
    if not host:
        return frozenset()
    if _IPV4.match(host):
        return frozenset({host, "ip-" + host.replace(".", "-")})
    forms = {host}
    ec2 = _EC2_HOST.match(host)
    if ec2:
        ip = ".".join(ec2.groups())
        forms.update((ip, "ip-" + ip.replace(".", "-")))
    return frozenset(forms)


def _host_of(nodename: str) -> str:
    host = nodename.split("@", 1)[1] if "@" in nodename else nodename
    return host.strip().lower().rstrip(".")


def is_celery_process(comm: str | None) -> bool:
    return comm is None or comm.lower().startswith(_CELERY_COMMS)


def match_evidence(
    evidence: Iterable[ExitEvidence],
    workers: Sequence[WorkerIdentity],
    worker_map: Mapping[str, str] | None = None,
) -> tuple[dict[str, list[ExitEvidence]], list[ExitEvidence]]:
    """Split evidence into {worker nodename: [evidence]} and the evidence no worker claims.

    Rules, in order: the configured map (when it names any worker for a host of the evidence,
    it alone decides which); the host (IP, hostname, pod name, in any of its forms) narrowed by
    pid when the evidence names a process; a pid alone only when the evidence has no host at all
    and exactly one worker has that pid.
    """
    matched: dict[str, list[ExitEvidence]] = {}
    unmatched: list[ExitEvidence] = []
    for item in evidence:
        names = _candidates(item.hosts, item.pid, item.process, workers, worker_map or {})
        if not names:
            unmatched.append(item)
            continue
        for name in names:
            matched.setdefault(name, []).append(item)
    return matched, unmatched


def workers_for_hosts(
    hosts: Iterable[str], workers: Sequence[WorkerIdentity], worker_map: Mapping[str, str]
) -> list[str]:
    """The workers a record naming only hosts (a pod, a task id, an address) belongs to, by the
    same rules as exit evidence without a pid."""
    return _candidates(tuple(hosts), None, None, workers, worker_map)


def _candidates(
    raw_hosts: Iterable[str],
    pid: int | None,
    process: str | None,
    workers: Sequence[WorkerIdentity],
    worker_map: Mapping[str, str],
) -> list[str]:
    hosts = [h.strip().lower().rstrip(".") for h in raw_hosts if h and h.strip()]
    forms = [host_forms(h) for h in hosts]
    # A fully qualified evidence host also names a worker whose host is its bare first label.
    shorts = {h.split(".", 1)[0] for h in hosts if "." in h and not _IPV4.match(h)}
    mappable = {f for group in forms for f in group} | shorts
    by_host = [w for w in workers if any(_mapped(h, w.name, worker_map) for h in sorted(mappable))]
    if not by_host:
        by_host = [
            w
            for w in workers
            if any(group & w.host_keys() for group in forms) or w.bare_host() in shorts
        ]
    if pid is None:
        return sorted(w.name for w in by_host)
    if not hosts:
        by_pid = [w for w in workers if pid == w.pid or pid in w.pool_pids]
        return [by_pid[0].name] if len(by_pid) == 1 else []
    exact = [w for w in by_host if pid == w.pid or pid in w.pool_pids]
    if exact:
        return sorted(w.name for w in exact)
    # A pid the roster never saw (a child forked since the last run): only a Celery-looking
    # process on a host with a single worker is claimed.
    if len(by_host) == 1 and is_celery_process(process):
        return [by_host[0].name]
    return []


def _mapped(host: str, nodename: str, worker_map: Mapping[str, str]) -> bool:
    for pattern, target in worker_map.items():
        if fnmatchcase(host, pattern.lower()) and fnmatchcase(nodename, target):
            return True
    return False
