"""Sampling the broker with py-spy while a scenario runs, and summarising where its time went."""

from __future__ import annotations

import re
import signal
import subprocess
from collections import Counter
from pathlib import Path

# "function (path/to/file.py:123)" in py-spy's raw (collapsed) output; the line is dropped so
# samples of one function add up.
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")


class Sampler:
    """`py-spy record --pid` in the background; `stop()` makes it write its collapsed stacks."""

    def __init__(self, py_spy: str, pid: int, output: Path, rate: int = 500, *, gil: bool = False) -> None:
        self.output = output
        # --gil keeps only samples of the thread holding the GIL: where the broker's Python CPU goes.
        # Without it, threads blocked in C (fsync, epoll, locks) count too: where its wall time goes.
        self._process = subprocess.Popen(
            [
                py_spy,
                "record",
                "--pid",
                str(pid),
                "--rate",
                str(rate),
                "--format",
                "raw",
                "--threads",
                "--nonblocking",
                *(["--gil"] if gil else []),
                "--output",
                str(output),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def stop(self) -> str:
        """Stop sampling; return py-spy's own messages (empty when all went well)."""
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)
        try:
            _, err = self._process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self._process.kill()
            _, err = self._process.communicate()
        return err.decode(errors="replace")[-2000:]


def _name(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "/broker/", "/clients/", "/lib/python"):
        if marker in path:
            path = path.split(marker, 1)[1] if marker != "/lib/python" else "stdlib" + path.split(marker, 1)[1][4:]
            break
    return f"{match['func']} ({path})"


def summarise(collapsed: Path, top: int = 40) -> str:
    """Self and inclusive time per function, and time per thread, as a text report."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        if frames and frames[0].startswith(("thread", "process")):
            threads[frames[0]] += count
            frames = [f for f in frames[1:] if not f.startswith(("thread", "process"))]
        names = [_name(f) for f in frames]
        if names:
            own[names[-1]] += count
        for name in set(names):
            inclusive[name] += count
    if total == 0:
        return "no samples\n"
    lines = [f"samples: {total} (busy threads only)", "", "by thread:"]
    lines += [f"  {100 * c / total:5.1f}%  {name}" for name, c in threads.most_common(12)]
    lines += ["", "self time (leaf frame):"]
    lines += [f"  {100 * c / total:5.1f}%  {name}" for name, c in own.most_common(top)]
    lines += ["", "inclusive time:"]
    lines += [f"  {100 * c / total:5.1f}%  {name}" for name, c in inclusive.most_common(top)]
    return "\n".join(lines) + "\n"
