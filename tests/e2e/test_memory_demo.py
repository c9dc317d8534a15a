"""`oomcheck demo --memory` end to end: the memory_pressure warning names the growing task
before the kill, and the kill's alert says it was growing; both read back from SNS."""

from __future__ import annotations

import re

from oomcheck.demo.memory import run_memory_demo
from oomcheck.demo.workers import memory_cgroup_available


def test_memory_demo_warns_before_the_kill_and_names_the_task() -> None:
    ok, why = memory_cgroup_available()
    if not ok:
        print(f"no memory cgroup ({why}): the process group's RSS stands in, SIGKILL kills")
    lines: list[str] = []
    assert run_memory_demo(use_cgroup=ok, out=lines.append) == 0, "\n".join(lines)
    text = "\n".join(lines)
    task = re.search(r"sent demo.grow as task (\S+):", text)
    assert task, text
    # the warning came (and was alerted) before the worker died
    warned = text.index("near its memory limit: demo.grow")
    assert text.index("findings ['memory_pressure']") < text.index("[6/6] the worker died")
    assert f"running: demo.grow {task.group(1)}" in text[warned:]
    assert f"growing in it: demo.grow {task.group(1)}" in text
    if ok:
        assert "died, OOM-killed (exit 137)" in text
