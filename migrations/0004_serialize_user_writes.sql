-- Writes and deletions of one user serialized across writers (instances, replays, backfills).
-- depends: 0003_create_deleted_users
--
-- Each batch is written by one statement, and a statement reads the snapshot taken when it started. Two
-- writers on different connections could miss each other: a write that started before a concurrent
-- deletion committed did not see the tombstone and stored the row again, and a deletion did not see a
-- row that a concurrent write committed after the deletion started, so it left that row and its inbox
-- payloads (measured: 44 of 60 such races left the deleted user's row). So every batch first takes a
-- lock per user it touches (shared to write, exclusive to delete), then, inside a VOLATILE function,
-- whose every query takes a fresh snapshot, deletes and reads tombstones: whichever writer waited sees
-- what the other committed.

-- A deleted user's inbox payload as it is kept: only `type`, `timestamp` and `data.id`, taken from the
-- columns where they were validated (a payload may be a JSON string, when jsonb refused it as it came).
-- The timestamp is kept only when it looks like one: in a misshapen envelope it is free text. `data.id`
-- is the row's user id: a row without one keeps no id (what it named was no valid id). IMMUTABLE SQL, so
-- PostgreSQL inlines it.
CREATE FUNCTION sync_service_erased(event_type text, user_id text, payload jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'type', to_jsonb(event_type),
        'timestamp', CASE WHEN payload ->> 'timestamp' ~ '^[0-9:.TZ+-]{1,40}$' THEN payload -> 'timestamp' END,
        'data', jsonb_build_object('id', to_jsonb(user_id))))
$$;

-- Called first by each batch's write (sql.WRITE_BATCH), in the write's own transaction:
-- 1. take the batch's user locks (`lock_keys`, sorted, so that batches cannot deadlock each other): one
--    per bucket of user ids, 2 * bucket + 1 exclusive for a bucket holding a user the batch deletes,
--    2 * bucket shared for one holding only users it writes (ingest.core.lock_keys). So writes of a user
--    never wait for each other, and a write and a deletion of one user wait for the other's commit. They
--    are transaction-level advisory locks (released at commit, so PgBouncer's transaction pooling keeps
--    them) of class 1937337955 ('sync'); with 256 buckets a batch of any size holds at most 256 locks, far
--    below the lock table's size;
-- 2. apply the deletions: the rows, the tombstones, and the erasure of the deleted users' stored inbox
--    payloads (by user id, and those without a user id carrying one of `deleted_emails`), except the
--    batch's own inbox rows (`own_message_ids`), which the write stores erased itself;
-- 3. return which of `writes` are tombstoned, now: the write stores none of them.
-- Plans are made for each call's arguments: a plan PostgreSQL would otherwise settle on in a young
-- database would scan whole tables as they grow.
CREATE FUNCTION sync_service_guard_batch(
    lock_keys integer[], writes text[], deletions text[], deleted_emails text[], own_message_ids text[]
) RETURNS SETOF text
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_custom_plan
AS $$
BEGIN
    -- One query for all the locks: a PERFORM per lock cost about as much again as the rest of the call.
    PERFORM CASE WHEN key & 1 = 1 THEN pg_advisory_xact_lock(1937337955, key >> 1)
                 ELSE pg_advisory_xact_lock_shared(1937337955, key >> 1) END
    FROM unnest(lock_keys) AS key;
    IF cardinality(deletions) > 0 THEN
        DELETE FROM users WHERE id = ANY(deletions);
        INSERT INTO deleted_users (id) SELECT unnest(deletions) ON CONFLICT (id) DO NOTHING;
        UPDATE webhook_events AS e
        SET payload = sync_service_erased(e.event_type, e.user_id, e.payload)
        WHERE e.user_id = ANY(deletions) AND e.message_id <> ALL(own_message_ids);
        UPDATE webhook_events AS e
        SET payload = sync_service_erased(e.event_type, e.user_id, e.payload)
        WHERE e.user_id IS NULL AND (e.payload -> 'data' ->> 'email') = ANY(deleted_emails)
          AND e.message_id <> ALL(own_message_ids);
    END IF;
    RETURN QUERY SELECT id FROM deleted_users WHERE id = ANY(writes);
END
$$;
