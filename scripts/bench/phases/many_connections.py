"""--ingest-at N: after the main phases, more deliveries sent once each at N connections (e.g. 256).

Does the service answer every delivery, and how do its rate and latency hold up, when many more clients
send at once than in the main phases? A stream of its own (new users and updates of them), so the
checks afterwards cover it as well; bounded by `plan.ingest_cap_seconds` like the other ingest phases.
"""

from __future__ import annotations

from bench import workload
from bench.phases.ingest import Ingested, deliver
from bench.session import Session


def name(connections: int) -> str:
    return f"ingest at {connections} connections"


def run(session: Session, connections: int) -> Ingested:
    events = workload.Workload(seed=5).events(session.plan.many_connections_deliveries)
    _, ingested = deliver(session, name(connections), events, connections=connections)
    return ingested
