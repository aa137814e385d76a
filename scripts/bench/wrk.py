"""Running wrk with requests.lua and reading back what it measured."""

from __future__ import annotations

import json
import resource
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).with_name("requests.lua")


class WrkMissing(RuntimeError):
    pass


def find_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise WrkMissing(
            "wrk is not installed. It is the load generator this benchmark uses: on Debian or Ubuntu run "
            "`apt-get install -y wrk` (as root), on macOS `brew install wrk`, then run this again."
        )
    return path


@dataclass(frozen=True, slots=True)
class WrkResult:
    answered: int  # responses received (counted in Lua)
    issued: tuple[int, ...]  # requests sent, per thread (each thread sends its file in order)
    finished: bool  # every thread sent its whole file and got every answer ("once" mode)
    span_s: float  # first request sent to last answer received
    statuses: dict[int, int]
    errors: dict[str, int]  # wrk's: connect, read, write, timeout (socket errors); status (answers >= 400)
    latency_ms: dict[str, float]  # p50, p90, p99, max, mean
    wrk_cpu_s: float  # CPU time wrk itself used (user + system)
    output: str

    @property
    def rate(self) -> float:
        return self.answered / self.span_s if self.span_s > 0 else 0.0

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    @property
    def not_ok(self) -> int:
        return self.answered - self.ok

    @property
    def socket_error_count(self) -> int:
        return sum(n for kind, n in self.errors.items() if kind != "status")

    def socket_errors(self) -> str:
        """wrk's socket errors by kind (its "status" count is the answers >= 400, in `statuses`)."""
        return ", ".join(f"{kind} {n:,}" for kind, n in self.errors.items() if kind != "status")

    def status_summary(self) -> str:
        return ", ".join(f"{status}: {n:,}" for status, n in sorted(self.statuses.items())) or "none"


def run_wrk(
    url: str,
    prefix: Path,
    *,
    mode: str,
    threads: int,
    connections: int,
    duration_s: float,
) -> WrkResult:
    """Run wrk against `url` with the requests in `prefix.N`.

    mode "cycle": for `duration_s`. mode "once": until every request was sent and answered, at most
    `duration_s` (wrk itself only knows durations, so we end it with SIGINT as soon as each thread has
    written its done marker; wrk then prints its report as usual).
    """
    wrk = find_wrk()
    for thread in range(threads):
        Path(f"{prefix}.{thread}.done").unlink(missing_ok=True)
    command = [
        wrk, "--threads", str(threads), "--connections", str(connections),
        "--duration", f"{max(1, round(duration_s))}s", "--timeout", "30s", "--latency",
        "--script", str(SCRIPT), url, "--", str(prefix), mode,
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out_path = Path(f"{prefix}.wrk.out")
    with open(out_path, "w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + duration_s + 60
            interrupted = False
            while proc.poll() is None:
                if time.monotonic() > deadline:
                    proc.kill()
                    break
                if (
                    mode == "once"
                    and not interrupted
                    and all(Path(f"{prefix}.{t}.done").exists() for t in range(threads))
                ):
                    proc.send_signal(signal.SIGINT)
                    interrupted = True
                time.sleep(0.02)
            proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    output = out_path.read_text()
    line = next((ln for ln in output.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk did not report (exit code {proc.returncode}):\n{output[-2000:]}")
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    return WrkResult(
        answered=int(raw["answered"]),
        issued=tuple(int(n) for n in raw["issued"]),
        finished=bool(raw["finished"]),
        span_s=float(raw["span_s"]),
        statuses={int(k): int(v) for k, v in raw["statuses"].items()},
        errors={k: int(v) for k, v in raw["errors"].items()},
        latency_ms={k: float(v) / 1000 for k, v in raw["latency_us"].items()},
        wrk_cpu_s=(after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        output=output,
    )
