-- Create deleted_users: one tombstone per Better Auth user id deleted (`user.deleted`).
-- depends: 0002_create_webhook_events
-- A tombstone is final (Better Auth never reuses an id): a later or replayed user.created/user.updated
-- for it is stale. It holds no personal data, so `prune-events` never touches it.
CREATE TABLE deleted_users (
    id text PRIMARY KEY,
    deleted_at timestamptz NOT NULL DEFAULT now()
);

-- A deletion erases inbox rows that carry no valid user id but the deleted user's email (a rejected
-- event whose id could not be read): this partial index finds them without scanning the inbox, and costs
-- nothing for the rows that have a user id (nearly all of them).
CREATE INDEX webhook_events_unowned_email_idx ON webhook_events ((payload -> 'data' ->> 'email'))
    WHERE user_id IS NULL;
