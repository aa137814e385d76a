"""The report a run prints: a row of figures per phase, the targets met or missed, memory, the checks."""

from __future__ import annotations

import platform

from bench import procfs
from bench.phases import ingest, many_connections, noop_post, per_request, reads, replay
from bench.profile_summary import comparison
from bench.profiling import per_request_cpu
from bench.session import Session

TARGET_INGEST_RATIO = 0.85
TARGET_P99_MS = 50.0
TARGET_READ_RATIO = 0.80
TARGET_RSS_GROWTH = 0.10
# CPU per acknowledged delivery, against the no-op POST's app CPU per request.
TARGET_POSTGRES_CPU_RATIO = 0.3
TARGET_APP_CPU_RATIO = 1.5

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


# The phases whose CPU per request is set against a no-op's app CPU per request: which no-op.
CPU_ROWS = (
    (noop_post.NAME, noop_post.NAME),
    (ingest.INGEST, noop_post.NAME),
    (ingest.DELETION_MIX, noop_post.NAME),
    (per_request.NAME, noop_post.NAME),
    (reads.NOOP_GET, reads.NOOP_GET),
    (reads.USERS_ME, reads.NOOP_GET),
)


def render(session: Session, *, quick: bool, elapsed: float, ingest_at: int | None = None) -> str:
    out: list[str] = []
    cores, usable = procfs.core_count()
    out.append(
        f"sync-service benchmark{' (--quick)' if quick else ''}: {cores} cores "
        f"({usable} usable), {platform.python_implementation()} {platform.python_version()}, "
        f"{session.workers} uvicorn worker(s) per app, "
        f"wrk {session.threads} thread(s) x {session.connections} connections, loopback, nothing pinned; "
        f"run took {elapsed:.0f} s"
    )
    out.append(f"PostgreSQL {session.apps.postgres}")
    out.append("")
    out += _phases(session)
    out.append("")
    out += _cpu(session)
    out.append("")
    out.append("targets:")
    out += _targets(session)
    out.append("")
    if ingest_at is not None:
        out += _many_connections(session, ingest_at)
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
            f"{fig.per_answer_us('app') or 0:>10,.0f} us"
            "   " + " / ".join(f"{fig.cores(k):.2f}" for k in ("app", "postgres", "wrk", "other"))
        )
    out.append(
        "(app CPU/req: the app's CPU time per answer, the steadiest figure on a busy machine; postgres: the"
        " backends of the run's databases and the server's own processes (walwriter, checkpointer, ...);"
        " other: everything else that ran meanwhile, other work's PostgreSQL backends included)"
    )
    shown = [(name, session.figures[name]) for name in ROWS if name in session.figures]
    out += [f"{name}: {fig.note}" for name, fig in shown if fig.result and fig.note]
    out += [
        f"{name}: wrk socket errors: {fig.result.socket_errors()}"
        for name, fig in shown
        if fig.result and fig.result.socket_error_count
    ]
    return out


def _cpu(session: Session) -> list[str]:
    out = [
        "CPU per request, in microseconds: CPU time used while wrk ran / answers 2xx (for ingest: per"
        " acknowledged delivery; for /users/me: per read)",
        f"{'phase':<22}{'app':>9}{'x no-op':>9}{'postgres':>10}{'x no-op':>9}{'all pg':>9}   x no-op: against"
        " the app CPU per request of",
    ]
    for name, noop in CPU_ROWS:
        fig, base = session.figures.get(name), session.figures.get(noop)
        if fig is None or fig.result is None or base is None:
            continue
        app, postgres = fig.per_answer_us("app", ok_only=True), fig.per_answer_us("postgres", ok_only=True)
        postgres_all = fig.per_answer_us("postgres_all", ok_only=True)
        unit = base.per_answer_us("app", ok_only=True)
        if app is None or postgres is None or postgres_all is None or not unit:
            continue
        out.append(
            f"{name:<22}{app:>9,.0f}{app / unit:>9.2f}{postgres:>10,.0f}{postgres / unit:>9.2f}"
            f"{postgres_all:>9,.0f}   {noop}"
            + ("; its postgres: the server's background, nothing is sent to it" if name == noop else "")
        )
    out.append(
        "(app: the app's process. postgres: as in the table above; a backend of the run that ended during"
        " the phase would be missing, the service's pool keeps its connections. all pg: every PostgreSQL"
        " process on the machine, other work's and backends that ended included. Nothing is subtracted:"
        " the background the no-op rows show stays in the others)"
    )
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
    for name, label in ((ingest.INGEST, "ingest"), (ingest.DELETION_MIX, "deletion mix")):
        lines += _cpu_targets(session, name, noop_post.NAME, f"{label}, per delivery", targets=True)
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
        lines += _cpu_targets(session, reads.USERS_ME, reads.NOOP_GET, "/users/me, per read", targets=False)
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


def _cpu_targets(session: Session, name: str, noop: str, label: str, *, targets: bool) -> list[str]:
    """PostgreSQL's and the app's CPU per 2xx answer of `name` against `noop`'s app CPU per request;
    held against the delivery targets when `targets`, else shown with none."""
    fig, base = session.figures.get(name), session.figures.get(noop)
    if fig is None or base is None:
        return []
    unit = base.per_answer_us("app", ok_only=True)
    lines = []
    for what, goal in (("postgres", TARGET_POSTGRES_CPU_RATIO), ("app", TARGET_APP_CPU_RATIO)):
        used = fig.per_answer_us(what, ok_only=True)
        if used is None or not unit:
            continue
        ratio = used / unit
        text = (
            f"{label}: {'PostgreSQL' if what == 'postgres' else 'app'} CPU / {noop}'s app CPU per request"
            f" = {used:,.0f} / {unit:,.0f} us = {ratio:.2f}x"
        )
        if targets:
            lines.append(_target(text, ratio <= goal, f"<= {goal}x"))
        else:
            lines.append(f"  -     {text}   (no target)")
    return lines


def _many_connections(session: Session, connections: int) -> list[str]:
    name = many_connections.name(connections)
    fig = session.figures.get(name)
    if fig is None or fig.result is None:
        return []
    r = fig.result
    out = [
        f"{name} (--ingest-at {connections}; {sum(r.issued):,} more deliveries, each sent"
        f" once, at most {session.plan.ingest_cap_seconds:g} s; no target):",
        f"  {r.rate:,.0f} req/s, p50 {r.latency_ms['p50']:.1f} ms, p99 {r.latency_ms['p99']:.1f} ms, max "
        f"{r.latency_ms['max']:.1f} ms",
        f"  answers {r.answered:,} ({r.status_summary()}), non-2xx {r.not_ok:,}; wrk socket errors: "
        f"{r.socket_errors()}",
    ]
    measured = session.figures.get(ingest.INGEST)
    if measured is not None and measured.result is not None and measured.result.rate:
        out.append(
            f"  against the ingest at {session.connections} connections: req/s "
            f"{r.rate / measured.result.rate:.2f}x, p99 {r.latency_ms['p99']:.1f} against "
            f"{measured.result.latency_ms['p99']:.1f} ms"
        )
    app, postgres = fig.per_answer_us("app", ok_only=True), fig.per_answer_us("postgres", ok_only=True)
    if app is not None and postgres is not None:
        out.append(
            f"  CPU per acknowledged delivery: app {app:,.0f} us, PostgreSQL {postgres:,.0f} us; cores used: "
            + " / ".join(f"{fig.cores(k):.2f}" for k in ("app", "postgres", "wrk", "other"))
            + " (app / postgres / wrk / other)"
        )
    out.append(f"  {fig.note}")
    return out


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
