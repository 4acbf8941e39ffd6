-- API keys of the REST API. Only a SHA-256 of the secret is stored: the secret is 256 random bits,
-- so a slow password hash would add latency to every request without adding safety.
CREATE TABLE api_keys (
    key_id          text PRIMARY KEY,                -- public part of the key (alk_<key_id>_<secret>)
    secret_sha256   bytea NOT NULL,
    org_id          text NOT NULL,
    user_id         text NOT NULL,
    role            text NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    name            text NOT NULL DEFAULT '',
    rate_per_second double precision CHECK (rate_per_second > 0),  -- NULL: the platform default
    rate_burst      integer CHECK (rate_burst > 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    created_by      text NOT NULL,
    revoked_at      timestamptz
);

CREATE INDEX api_keys_org ON api_keys (org_id, created_at DESC);
