-- Who may call the API, and what they did with it: API keys with roles, and the audit trail of
-- every change requested through the API.

-- A key's secret is shown once, when it is created; only its SHA-256 is kept. Secrets are 256
-- random bits, so a fast hash is enough: there is nothing to guess.
CREATE TABLE api_key (
    id            uuid PRIMARY KEY,
    -- Who holds it: the actor the timeline and the audit name.
    name          text NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$'),
    role          text NOT NULL CHECK (role IN ('client', 'operator', 'admin')),
    secret_sha256 bytea NOT NULL CHECK (length(secret_sha256) = 32),
    -- The secret's first characters, so that people can tell their keys apart.
    secret_prefix text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- The admin key that created it; NULL for keys made at start-up.
    created_by    uuid REFERENCES api_key (id),
    revoked_at    timestamptz,
    revoked_by    uuid REFERENCES api_key (id),
    CONSTRAINT api_key_secret_key UNIQUE (secret_sha256)
);
-- Two keys in use never share a name, so the name alone says who acted.
CREATE UNIQUE INDEX api_key_name_in_use ON api_key (name) WHERE revoked_at IS NULL;

-- Append-only: the database itself refuses to change or remove a row.
CREATE TABLE audit (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    key_id     uuid NOT NULL REFERENCES api_key (id),
    key_name   text NOT NULL,
    role       text NOT NULL,
    method     text NOT NULL,
    -- The operation's path pattern, e.g. /orders/{id}/cancel.
    route      text NOT NULL,
    -- What the request named: its path parameters and what it created, e.g. {"id": "…"}.
    ids        jsonb NOT NULL DEFAULT '{}'::jsonb,
    request_id text NOT NULL,
    trace_id   text NOT NULL,
    -- The HTTP status the request was answered with.
    status     smallint NOT NULL
);
-- Every change through the API writes a row, so each index here is paid by every order. Reads
-- are an admin's, newest first by id: what one key did has an index; the other filters (route,
-- status) are applied on the walk; rows arrive in time order, so a BRIN index serves time
-- ranges for almost no upkeep.
CREATE INDEX audit_key ON audit (key_id, id);
CREATE INDEX audit_at ON audit USING brin (at);

CREATE FUNCTION audit_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_no_update_or_delete BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_is_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION audit_is_append_only();
