"""`sync-service replay --direct`: events/s of a JSON Lines file of new users, process start included;
checks that every event reached the inbox. Skipped when this build has no such verb."""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from pathlib import Path

from bench import checks, workload
from bench.progress import log
from bench.session import Figures, Session

NAME = "replay --direct"


def run(session: Session) -> None:
    apps = session.apps
    help_run = subprocess.run(
        [*apps.cli, "replay", "--help"], capture_output=True, text=True, env=apps.service_env,
        cwd=session.tmp, stdin=subprocess.DEVNULL, timeout=60, check=False,
    )  # fmt: skip
    if help_run.returncode != 0 or "--direct" not in help_run.stdout:
        session.figures[NAME] = Figures(
            NAME, note="skipped: this build has no `sync-service replay --direct`"
        )
        log("replay --direct: skipped (no such verb)")
        return
    events = workload.Workload(seed=3).new_users(session.plan.replay_events)
    source = session.tmp / "replay.jsonl"
    with open(source, "wb") as out:
        for event in events:
            out.write(b'{"id":"%s","payload":%s}\n' % (event.message_id.encode(), event.body))
    command = [*apps.cli, "replay", "--direct", *_replay_args(help_run.stdout, source)]
    before = asyncio.run(checks.count_inbox(apps.database_url))
    log(f"replay --direct: {len(events):,} events (replay {' '.join(command[len(apps.cli) + 1 :])})")
    wall = time.monotonic()
    run = subprocess.run(
        command, capture_output=True, text=True, env=apps.service_env, cwd=session.tmp,
        stdin=subprocess.DEVNULL, timeout=240, check=False,
    )  # fmt: skip
    wall = time.monotonic() - wall
    added = asyncio.run(checks.count_inbox(apps.database_url)) - before
    tail = (run.stdout + run.stderr).strip().splitlines()[-3:]
    session.figures[NAME] = Figures(
        NAME,
        note=f"{len(events) / wall:,.0f} events/s ({len(events):,} events in {wall:.1f} s, process start "
        f"included; exit code {run.returncode})",
    )
    session.checks.append(
        checks.Check(
            run.returncode == 0 and added == len(events),
            f"replay --direct applied {len(events):,} events: exit code {run.returncode}, "
            f"inbox +{added:,}" + (f"; last output: {' | '.join(tail)}" if run.returncode else ""),
        )
    )


def _replay_args(help_text: str, source: Path) -> list[str]:
    """How this build's replay takes a JSON Lines file (an option if its help names one, else
    positional), keeping our message ids and skipping migrations (both already done) where it can."""
    args = [str(source)]
    for option in ("--file", "--input", "--from-file", "--jsonl"):
        if re.search(rf"{option}\b", help_text):
            args = [option, str(source)]
            break
    return args + [flag for flag in ("--keep-ids", "--no-migrate") if re.search(rf"{flag}\b", help_text)]
