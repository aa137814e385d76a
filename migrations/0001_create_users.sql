-- Create users: one row per Better Auth user, written only by the webhook ingest.
-- updated_at holds Better Auth's updatedAt and orders writes (an older event never overwrites a newer row).
CREATE TABLE users (
    id text PRIMARY KEY,
    email text NOT NULL,
    email_verified boolean NOT NULL DEFAULT false,
    name text,
    image text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX users_email_key ON users (email);
