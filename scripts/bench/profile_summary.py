"""Summarise a `py-spy record --format raw` profile: the functions with the most samples.

    python scripts/bench/profile_summary.py profile.txt [--top 20]

Self: samples whose innermost frame is the function. Total: samples with the function anywhere on the
stack (counted once per sample). Percentages are of all recorded (non-idle) samples.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*)(?::\d+)?\)$")


def _function(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "lib/python3", "/sync_service/", "/scripts/"):
        if marker in path:
            path = path[path.index(marker) :].removeprefix("site-packages/")
            break
    return f"{match['func']} ({path})"


def summarise(path: Path, top: int = 20) -> str:
    self_counts: Counter[str] = Counter()
    total_counts: Counter[str] = Counter()
    samples = 0
    for line in path.read_text().splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        count = int(match["count"])
        frames = [_function(f) for f in match["stack"].split(";") if f]
        if not frames:
            continue
        # py-spy puts the thread name first ("process 123:..." / "thread (0x..)") in raw output: skip it.
        if frames[0].startswith(("process ", "thread ")):
            frames = frames[1:] or frames
        samples += count
        self_counts[frames[-1]] += count
        for function in set(frames):
            total_counts[function] += count
    if samples == 0:
        return "no samples"
    out = [f"{samples:,} samples", "", f"top {top} by self time:"]
    out += [f"  {100 * n / samples:5.1f}%  {name}" for name, n in self_counts.most_common(top)]
    out += ["", f"top {top} by total time (the function and what it calls):"]
    out += [f"  {100 * n / samples:5.1f}%  {name}" for name, n in total_counts.most_common(top)]
    return "\n".join(out)


# Where a request's CPU goes, by what its innermost frame belongs to (the first component that matches).
COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("signature check (svix)", ("standardwebhooks/", "svix/", "hmac.py", "base64.py", "webhook_signatures.py",
                                "check_message_id")),
    ("decode and validate", ("events.py", "noop_app.py")),
    ("queue, futures, event loop", ("batching.py", "batcher.py", "asyncio/")),
    ("ingest core and asyncpg", ("ingest.py", "asyncpg/", "database.py")),
    ("token check and user read", ("auth.py", "auth_middleware.py", "jwt/", "users.py", "cryptography/")),
    ("metrics and request log", ("request_log.py", "monitoring.py", "prometheus_client/", "logging/")),
    ("socket writes", ("_HeadersWithBody.write",)),
    ("uvicorn, Litestar, handlers", ("uvicorn/", "litestar/", "http_protocol.py", "routes/",
                                     "contextlib.py")),
)  # fmt: skip


def per_request(path: Path, answers: int, rate_hz: int) -> dict[str, float]:
    """Sampled CPU microseconds per answered request, by component (`COMPONENTS`, then "other")."""
    samples: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        innermost = match["stack"].rsplit(";", 1)[-1]
        component = next((name for name, keys in COMPONENTS if any(k in innermost for k in keys)), "other")
        samples[component] += int(match["count"])
    scale = 1e6 / rate_hz / max(answers, 1)
    return {name: samples[name] * scale for name in [*(n for n, _ in COMPONENTS), "other"]}


def comparison(baseline: str, ceiling: dict[str, float], name: str, service: dict[str, float]) -> str:
    """A table of two `per_request` results side by side, with the difference."""
    out = [f"  {'us per request':<30}{baseline:>14}{name:>16}{'difference':>12}"]
    for component in ceiling:
        a, b = ceiling[component], service[component]
        out.append(f"  {component:<30}{a:>14.0f}{b:>16.0f}{b - a:>+12.0f}")
    total_a, total_b = sum(ceiling.values()), sum(service.values())
    out.append(f"  {'all sampled':<30}{total_a:>14.0f}{total_b:>16.0f}{total_b - total_a:>+12.0f}")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    print(summarise(args.profile, args.top))


if __name__ == "__main__":
    main()
