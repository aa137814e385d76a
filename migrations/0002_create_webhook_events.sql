-- Create webhook_events: the inbox, one row per verified delivery, keyed by the message id.
-- depends: 0001_create_users
-- It makes deliveries idempotent, lets operators inspect what arrived, and feeds `sync-service replay`.
-- Payloads hold PII: `sync-service prune-events` deletes old rows (received_at index).
CREATE TABLE webhook_events (
    message_id text PRIMARY KEY,
    event_type text NOT NULL,
    user_id text,
    event_timestamp timestamptz,
    received_at timestamptz NOT NULL DEFAULT now(),
    processed_at timestamptz NOT NULL DEFAULT now(),
    status text NOT NULL,
    error text,
    attempts integer NOT NULL DEFAULT 1,
    payload jsonb NOT NULL,
    CONSTRAINT webhook_events_status_check
        CHECK (status IN ('applied', 'stale', 'ignored', 'rejected', 'conflict'))
);

-- Pruning and replay by received time.
CREATE INDEX webhook_events_received_at_idx ON webhook_events (received_at);
-- Replay by status, and the count of rejected events waiting (metrics).
CREATE INDEX webhook_events_status_received_at_idx ON webhook_events (status, received_at);
-- Replay of one user's events.
CREATE INDEX webhook_events_user_id_received_at_idx ON webhook_events (user_id, received_at);
