"""Every SQL statement the service runs, as named constants, in one place.

Batch statements take their rows as one JSON array (`jsonb_to_recordset`) or as one array per key, so a
batch of any size is one round trip and one plan. Rows are sorted by key before they are sent, so
concurrent batches lock in the same order and cannot deadlock each other.
"""

# --- ingest -----------------------------------------------------------------------------------------

# What a batch's decisions start from, read in one statement (one snapshot): the rows of the batch's user
# ids and emails (kind 'u': id, NULL, then the other columns), the tombstones of its user ids (kind 't':
# id), and the inbox status of those of its message ids already seen (kind 'f': message id, status; the
# caller decides which statuses end a message id).
# The status is returned, not filtered on: without statistics (a young database) the planner took a status
# filter for selective and walked the (status, received_at) index over the whole inbox instead of looking
# the ids up in the primary key. Nothing is locked: WRITE_BATCH re-checks every decision that a concurrent
# writer could have changed since, and reports what it wrote.
READ_BATCH_STATE = """
SELECT 'u' AS kind, id AS key, NULL::text AS status, email, email_verified, name, image, created_at,
       updated_at
FROM users
WHERE id = ANY($1::text[]) OR email = ANY($2::text[])
UNION ALL
SELECT 't', id, NULL, NULL, NULL, NULL, NULL, NULL, NULL
FROM deleted_users
WHERE id = ANY($1::text[])
UNION ALL
SELECT 'f', message_id, status, NULL, NULL, NULL, NULL, NULL, NULL
FROM webhook_events
WHERE message_id = ANY($3::text[])
"""


# A batch's writes in one statement, so they commit together without an explicit transaction (one round
# trip instead of BEGIN, two writes and COMMIT). The rows come as two JSON arrays of objects ($1 users,
# $2 inbox rows, each sorted by key): encoding one JSON text is several times cheaper for the client than
# fifteen typed arrays, and the payloads travel inside it as they are. $6 are the ids of $1's users, $7 the
# user ids the batch deletes (sorted), $8 the emails their deletions and rows gave, $9 the lock keys of
# $6 and $7 (`ingest.core.lock_keys`).
# - `tombstones`: `sync_service_guard_batch` (migrations/0004) first locks the batch's users against
#   concurrent writers ($9), applies the deletions ($7, $8: the rows, the tombstones, the erasure of their
#   stored inbox payloads but the batch's own) and returns which of $6 are tombstoned. It runs in a function
#   because its queries must see what a writer it waited for committed, which this statement's snapshot,
#   taken before the wait, does not. It runs before `written` stores a row (that row's tombstone check needs
#   its result), so a user signing up again with the email of a user this batch deletes finds that row
#   gone; and it runs even when no row is written (`recorded` counts it).
# - `written`: the newest state of each user the batch applies. Its WHERE clause repeats the ordering rule
#   in the database so that a row a concurrent writer made newer is never overwritten by an older event,
#   and skips an id that is tombstoned.
# - `recorded`: one inbox row per evaluated delivery; an `applied` one whose user was not written after
#   all is recorded as `stale` (not one flagged `erase`: its user is deleted, by this batch if applied;
#   a join, not `= ANY(array of written ids)`: that compared every inbox row with every written id, half
#   of PostgreSQL's time on a 2,000-event replay batch), erased if a concurrent deletion is why. Rows
#   flagged `erase` and rows without a user id carrying a deleted email are stored erased
#   (`sync_service_erased`). A row that already ended for good is left alone (the caller reports a
#   duplicate: another writer finished it first); a rejected or conflicting one is evaluated again and
#   overwritten.
# It returns (kind 'x') only the inbox rows that did not end as asked: status NULL (not written: a
# duplicate) or `stale` (asked `applied`), usually none; and, read along so that a writer with a next batch
# waiting needs one round trip per batch, READ_BATCH_STATE's rows for that batch's keys ($3 user ids,
# $4 emails, $5 message ids). Like every part of one statement, that read sees the rows as they were before
# this statement's writes; the caller brings them up to date with what it wrote.
WRITE_BATCH = """
WITH incoming AS MATERIALIZED (
    SELECT * FROM jsonb_to_recordset($2::jsonb) AS x(
        message_id text, event_type text, user_id text, event_timestamp timestamptz,
        received_at timestamptz, status text, error text, payload jsonb, erase boolean)
), tombstones AS MATERIALIZED (
    SELECT id
    FROM sync_service_guard_batch(
        $9::integer[], $6::text[], $7::text[], $8::text[], ARRAY(SELECT message_id FROM incoming)
    ) AS guard (id)
), written AS (
    INSERT INTO users (id, email, email_verified, name, image, created_at, updated_at)
    SELECT * FROM jsonb_to_recordset($1::jsonb) AS x(
        id text, email text, email_verified boolean, name text, image text, created_at timestamptz,
        updated_at timestamptz)
    WHERE NOT EXISTS (SELECT 1 FROM tombstones AS t WHERE t.id = x.id)
    ON CONFLICT (id) DO UPDATE SET
        email = EXCLUDED.email,
        email_verified = EXCLUDED.email_verified,
        name = EXCLUDED.name,
        image = EXCLUDED.image,
        created_at = EXCLUDED.created_at,
        updated_at = EXCLUDED.updated_at
    WHERE users.updated_at < EXCLUDED.updated_at
       OR (users.updated_at = EXCLUDED.updated_at
           AND (users.email, users.email_verified, users.name, users.image, users.created_at)
               IS DISTINCT FROM
               (EXCLUDED.email, EXCLUDED.email_verified, EXCLUDED.name, EXCLUDED.image, EXCLUDED.created_at))
    RETURNING id
), recorded AS (
    INSERT INTO webhook_events (message_id, event_type, user_id, event_timestamp, received_at, status,
                                error, payload)
    SELECT i.message_id, i.event_type, i.user_id, i.event_timestamp, i.received_at,
           CASE WHEN i.status = 'applied' AND i.erase IS NULL AND w.id IS NULL THEN 'stale'
                ELSE i.status END,
           i.error,
           CASE WHEN i.erase
                  OR (i.user_id IS NULL AND (i.payload -> 'data' ->> 'email') = ANY($8::text[]))
                  OR (i.status = 'applied' AND i.erase IS NULL AND w.id IS NULL
                      AND EXISTS (SELECT 1 FROM tombstones AS t WHERE t.id = i.user_id))
                THEN sync_service_erased(i.event_type, i.user_id, i.payload)
                ELSE i.payload END
    FROM incoming AS i
    LEFT JOIN written AS w ON w.id = i.user_id
    WHERE (SELECT count(*) FROM tombstones) >= 0
    ON CONFLICT (message_id) DO UPDATE SET
        event_type = EXCLUDED.event_type,
        user_id = EXCLUDED.user_id,
        event_timestamp = EXCLUDED.event_timestamp,
        status = EXCLUDED.status,
        error = EXCLUDED.error,
        payload = EXCLUDED.payload,
        processed_at = now(),
        attempts = webhook_events.attempts + 1
    WHERE webhook_events.status IN ('rejected', 'conflict')
    RETURNING message_id, status
)
SELECT 'x' AS kind, i.message_id AS key, r.status, NULL::text AS email, NULL::boolean AS email_verified,
       NULL::text AS name, NULL::text AS image, NULL::timestamptz AS created_at,
       NULL::timestamptz AS updated_at
FROM incoming AS i LEFT JOIN recorded AS r USING (message_id)
WHERE r.status IS DISTINCT FROM i.status
UNION ALL
SELECT 'u', id, NULL, email, email_verified, name, image, created_at, updated_at
FROM users
WHERE id = ANY($3::text[]) OR email = ANY($4::text[])
UNION ALL
SELECT 't', id, NULL, NULL, NULL, NULL, NULL, NULL, NULL
FROM deleted_users
WHERE id = ANY($3::text[])
UNION ALL
SELECT 'f', message_id, status, NULL, NULL, NULL, NULL, NULL, NULL
FROM webhook_events
WHERE message_id = ANY($5::text[])
"""

# --- replay -----------------------------------------------------------------------------------------

# One page of inbox rows for `sync-service replay --inbox`, oldest first. Keyset pagination on
# (received_at, message_id), never OFFSET: `received_at >= $5` lets the index scan start at the cursor,
# the row comparison skips what the previous page already returned. A NULL filter means "any".
REPLAY_INBOX_PAGE = """
SELECT message_id, user_id, received_at, payload::text
FROM webhook_events
WHERE ($1::text[] IS NULL OR status = ANY($1::text[]))
  AND ($2::text[] IS NULL OR event_type = ANY($2::text[]))
  AND ($3::text[] IS NULL OR user_id = ANY($3::text[]))
  AND received_at < $4::timestamptz
  AND received_at >= $5::timestamptz
  AND (received_at, message_id) > ($5::timestamptz, $6::text)
ORDER BY received_at, message_id
LIMIT $7
"""

# How many rows REPLAY_INBOX_PAGE will return in all (the progress bar's total).
REPLAY_INBOX_COUNT = """
SELECT count(*)
FROM webhook_events
WHERE ($1::text[] IS NULL OR status = ANY($1::text[]))
  AND ($2::text[] IS NULL OR event_type = ANY($2::text[]))
  AND ($3::text[] IS NULL OR user_id = ANY($3::text[]))
  AND received_at >= $4::timestamptz
  AND received_at < $5::timestamptz
"""

# Session settings for `replay --direct`, which sends large batches at a table that may be filling up:
# - plan every statement for its actual arguments. Under the default plan cache mode PostgreSQL may settle
#   on a generic plan while a fresh table is still tiny: a sequential scan testing `= ANY($1)` element by
#   element, quadratic as the table grows (measured: 325 events/s instead of 6,000+ on one connection
#   filling an empty database with 500-event batches);
# - cost random reads as cached/SSD reads, so that READ_BATCH_STATE looks the batch's keys up in the indexes
#   instead of scanning the table (measured on 100,000 users, 500 new keys: 4 ms instead of 30 ms).
REPLAY_SESSION_SETTINGS = "SET plan_cache_mode = force_custom_plan; SET random_page_cost = 1.1"

# --- users API --------------------------------------------------------------------------------------

# The users of a batch of concurrent reads (`users.reader.UserReader`), one round trip for all of them, in the
# field order of `users.reader.User`. The dates come formatted as Better Auth sends them (UTC, milliseconds,
# `2026-11-27T11:58:53.300Z`, like JavaScript's toISOString): PostgreSQL's to_char costs the read a
# fraction of decoding a timestamptz into a datetime and formatting that in Python.
SELECT_USERS = """
SELECT id, email, email_verified, name, image,
       to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
       to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
FROM users
WHERE id = ANY($1::text[])
"""

# --- operations -------------------------------------------------------------------------------------

SELECT_ONE = "SELECT 1"

APPLIED_MIGRATIONS = "SELECT migration_id FROM _yoyo_migration"

COUNT_WAITING_EVENTS = """
SELECT status, count(*) FROM webhook_events WHERE status IN ('rejected', 'conflict') GROUP BY status
"""

# The moment before which inbox rows are pruned, by the database's clock (received_at is set by it).
PRUNE_CUTOFF = "SELECT now() - $1::interval"

# One bounded chunk of the inbox rows received before $1 (oldest first; the received_at index serves it),
# so each chunk is a short transaction that holds few locks while the service keeps writing.
PRUNE_EVENTS = """
WITH doomed AS (
    SELECT message_id FROM webhook_events WHERE received_at < $1 ORDER BY received_at LIMIT $2
)
DELETE FROM webhook_events w USING doomed d WHERE w.message_id = d.message_id
"""

# The same, only rows whose status is one of $3 (the (status, received_at) index serves it).
PRUNE_EVENTS_WITH_STATUS = """
WITH doomed AS (
    SELECT message_id FROM webhook_events
    WHERE received_at < $1 AND status = ANY($3::text[])
    ORDER BY received_at LIMIT $2
)
DELETE FROM webhook_events w USING doomed d WHERE w.message_id = d.message_id
"""

# What a prune would delete (`prune-events --dry-run`); $2 NULL means every status.
COUNT_PRUNABLE_EVENTS = """
SELECT count(*) FROM webhook_events
WHERE received_at < $1 AND ($2::text[] IS NULL OR status = ANY($2::text[]))
"""

SERVER_SETTINGS = """
SELECT current_setting('server_version') AS version,
       current_setting('max_connections')::int AS max_connections
"""

# --- backfill ---------------------------------------------------------------------------------------

# The source: Better Auth's user table, found in the catalog the way PostgreSQL resolves a name (the given
# schema, else the first schema of the search_path that has it). $1 schema or NULL, $2 table name.
BACKFILL_FIND_TABLE = """
SELECT c.oid, n.nspname, c.relname
FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE c.relname = $2 AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND (n.nspname = $1 OR ($1::text IS NULL AND n.nspname = ANY(current_schemas(false))))
ORDER BY array_position(current_schemas(false), n.nspname::text)
LIMIT 1
"""

BACKFILL_SEARCH_PATH = "SELECT array_to_string(current_schemas(false), ', ')"

# Its columns: name, base type name, declared type, and collation ('default' for the database's).
BACKFILL_TABLE_COLUMNS = """
SELECT a.attname, t.typname, format_type(a.atttypid, a.atttypmod) AS type,
       coalesce(co.collname, '') AS collation
FROM pg_attribute AS a
JOIN pg_type AS t ON t.oid = a.atttypid
LEFT JOIN pg_collation AS co ON co.oid = a.attcollation
WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
"""

# Whether the database's default collation sorts text by bytes, so a text primary key already serves the
# byte order the reconciliation reads in.
BACKFILL_DEFAULT_COLLATION_IS_C = """
SELECT datcollate IN ('C', 'POSIX') FROM pg_database WHERE datname = current_database()
"""

# A date as Better Auth sends it (UTC, milliseconds, `2026-11-27T11:58:53.300Z`); {moment} is a quoted
# column, converted to UTC.
BACKFILL_ISO_MILLISECONDS = """to_char({moment}, 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"""

# Templates for the source's pages: {columns}, {table}, {key} and {id} are identifiers from the catalog,
# quoted (`backfill.source.quote_ident`), never text from the command line. Keyset pagination by {key}
# (the id in byte order), never OFFSET.
BACKFILL_SOURCE_FIRST_PAGE = """
SELECT {columns} FROM {table} WHERE {id} IS NOT NULL ORDER BY {key} LIMIT $1
"""

BACKFILL_SOURCE_NEXT_PAGE = """
SELECT {columns} FROM {table} WHERE {key} > $1::{cast} ORDER BY {key} LIMIT $2
"""

BACKFILL_SOURCE_COUNT = "SELECT count(*) FROM {table}"

# Which of a list of ids the source holds now: checked again just before their deletion, so a user who
# signed up while the backfill ran is never deleted.
BACKFILL_SOURCE_PRESENT = "SELECT {id}::text FROM {table} WHERE {present_key} = ANY($1::{array})"

# Our side of the reconciliation: user ids in byte order (the order the source is read in), keyset pages.
# Which of these ids are tombstoned (deleted here): a real backfill leaves them deleted (`stale`), so a dry
# run does not count them as missing.
BACKFILL_TOMBSTONED = "SELECT id FROM deleted_users WHERE id = ANY($1::text[])"

BACKFILL_OUR_FIRST_IDS = """SELECT id FROM users ORDER BY id COLLATE "C" LIMIT $1"""

BACKFILL_OUR_NEXT_IDS = """
SELECT id FROM users WHERE id COLLATE "C" > $1 ORDER BY id COLLATE "C" LIMIT $2
"""

COUNT_USERS = "SELECT count(*) FROM users"

USERS_TABLE_EXISTS = "SELECT to_regclass('users') IS NOT NULL"
