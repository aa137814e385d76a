"""The report a run prints: a row of figures per phase, the targets met or missed, memory, the checks."""

from __future__ import annotations

import platform

from bench import procfs
from bench.phases import ingest, noop_post, per_request, reads, replay
from bench.profile_summary import comparison
from bench.profiling import per_request_cpu
from bench.session import Session

TARGET_INGEST_RATIO = 0.85
TARGET_P99_MS = 50.0
TARGET_READ_RATIO = 0.80
TARGET_RSS_GROWTH = 0.10

ROWS = (
    noop_post.NAME,
    ingest.WARMUP,
    ingest.INGEST,
    ingest.DELETION_MIX,
    per_request.NAME,
    reads.NOOP_GET,
    reads.USERS_ME,
    replay.NAME,
)


def render(session: Session, *, quick: bool, elapsed: float) -> str:
    out: list[str] = []
    cores, usable = procfs.core_count()
    out.append(
        f"sync-service benchmark{' (--quick)' if quick else ''}: {cores} cores "
        f"({usable} usable), {platform.python_implementation()} {platform.python_version()}, "
        f"wrk {session.threads} thread(s) x {session.connections} connections, loopback, nothing pinned; "
        f"run took {elapsed:.0f} s"
    )
    out.append(f"PostgreSQL {session.apps.postgres}")
    out.append("")
    out += _phases(session)
    out.append("")
    out.append("targets:")
    out += _targets(session)
    out.append("")
    out.append(
        f"memory: service peak RSS (VmHWM) {_mib(session.rss['peak'])}; no-op app peak "
        f"{_mib(session.rss['noop_peak'])}"
    )
    out.append("")
    out.append("correctness:")
    out += [f"  {c.line()}" for c in session.checks]
    if session.notes:
        out.append("")
        out += [f"note: {n}" for n in session.notes]
    out += _profiles(session)
    return "\n".join(out)


def _phases(session: Session) -> list[str]:
    out = [
        f"{'phase':<22}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'answers':>10}{'non-2xx':>9}"
        f"{'app CPU/req':>13}   CPU cores used: app / postgres / wrk / other"
    ]
    for name in ROWS:
        fig = session.figures.get(name)
        if fig is None:
            continue
        if fig.result is None:
            out.append(f"{name:<22}{fig.note}")
            continue
        r = fig.result
        out.append(
            f"{name:<22}{r.rate:>9,.0f}{r.latency_ms['p50']:>9.1f}{r.latency_ms['p99']:>9.1f}"
            f"{r.latency_ms['max']:>9.1f}{r.answered:>10,}{r.not_ok:>9,}"
            f"{fig.cpu['app'] / r.rate * 1e6 if r.rate else 0:>10,.0f} us"
            "   " + " / ".join(f"{fig.cpu[k]:.2f}" for k in ("app", "postgres", "wrk", "other"))
        )
    out.append(
        "(app CPU/req: the app's CPU time per answer, the steadiest figure on a busy machine; postgres:"
        " every PostgreSQL process on the machine; other: everything else that ran meanwhile)"
    )
    out += [f"{name}: {fig.note}" for name, fig in session.figures.items() if fig.result and fig.note]
    return out


def _targets(session: Session) -> list[str]:
    lines = []

    def rate(name: str) -> float | None:
        fig = session.figures.get(name)
        return fig.result.rate if fig is not None and fig.result is not None else None

    ingest_rate, ceiling = rate(ingest.INGEST), rate(noop_post.NAME)
    if ingest_rate is not None and ceiling:
        ratio = ingest_rate / ceiling
        lines.append(
            _target(
                f"ingest / no-op POST = {ingest_rate:,.0f} / {ceiling:,.0f} = {ratio:.2f}",
                ratio >= TARGET_INGEST_RATIO,
                f">= {TARGET_INGEST_RATIO}",
            )
        )
        result = session.figures[ingest.INGEST].result
        assert result is not None
        p99 = result.latency_ms["p99"]
        lines.append(
            _target(
                f"ingest p99 at {session.connections} connections = {p99:.1f} ms",
                p99 <= TARGET_P99_MS,
                f"<= {TARGET_P99_MS:g} ms",
            )
        )
    baseline = rate(per_request.NAME)
    if ingest_rate is not None and baseline:
        lines.append(
            f"  -     ingest / per-request receiver = {ingest_rate:,.0f} / {baseline:,.0f} = "
            f"{ingest_rate / baseline:.2f}   (no target: group commit against one transaction per request)"
        )
    read, noop_get = rate(reads.USERS_ME), rate(reads.NOOP_GET)
    if read is not None and noop_get:
        ratio = read / noop_get
        lines.append(
            _target(
                f"/users/me / no-op GET = {read:,.0f} / {noop_get:,.0f} = {ratio:.2f}",
                ratio >= TARGET_READ_RATIO,
                f">= {TARGET_READ_RATIO}",
            )
        )
    else:
        lines.append(f"  -     /users/me / no-op GET: not measured ({session.figures[reads.USERS_ME].note})")
    before, after = session.rss.get(ingest.WARMUP), session.rss.get(ingest.INGEST)
    measured = session.figures[ingest.INGEST].result if ingest.INGEST in session.figures else None
    if before and after and measured is not None:
        growth = after / before - 1
        text = f"RSS growth across {sum(measured.issued):,} deliveries = {growth:+.1%} ({_mib(before)} after"
        text += f" warm-up -> {_mib(after)})"
        lines.append(_target(text, growth < TARGET_RSS_GROWTH, f"< {TARGET_RSS_GROWTH:.0%}"))
    return lines


def _profiles(session: Session) -> list[str]:
    out: list[str] = []
    for phase, summary in session.profiles.items():
        out += ["", f"py-spy profile during {phase}:"]
        out += [f"  {line}" for line in summary.splitlines()]
    for ceiling, phase in ((noop_post.NAME, ingest.INGEST), (reads.NOOP_GET, reads.USERS_ME)):
        if ceiling in session.profiles and phase in session.profiles:
            out += ["", f"where the CPU of a request goes (py-spy samples), {phase} against {ceiling}:"]
            out.append(
                comparison(ceiling, per_request_cpu(session, ceiling), phase, per_request_cpu(session, phase))
            )
    return out


def _target(text: str, met: bool, goal: str) -> str:
    return f"  {'met   ' if met else 'MISSED'} {text}   (target {goal})"


def _mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"
