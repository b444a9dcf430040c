-- Client keys: `op_<key_id>_<secret>`; only SHA-256 of the secret is kept.
CREATE TABLE api_keys (
    key_id         text PRIMARY KEY,
    secret_sha256  bytea NOT NULL,
    client         text NOT NULL,
    scopes         text[] NOT NULL,
    orders_per_sec integer,
    quotes_per_sec integer,
    created_at     timestamptz NOT NULL DEFAULT now(),
    revoked_at     timestamptz
);
CREATE INDEX api_keys_client ON api_keys (client);
