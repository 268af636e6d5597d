-- What operators need to see and steer the system: step latency, stuck sagas, dead letters kept
-- with their reason and replayable, and which worker processes are alive.

-- When the saga entered its current state: a step's latency is measured from here, so resends
-- within a step do not hide how long the step really took.
ALTER TABLE saga ADD COLUMN state_entered_at timestamptz NOT NULL DEFAULT now();
-- W3C trace id (32 hex digits) of the request or message that started the saga; every message of
-- the saga carries it in its traceparent.
ALTER TABLE saga ADD COLUMN trace_id text;
-- Stuck: waiting for a human (failed), or open with nothing that will move it: past its deadline
-- (no engine is sweeping) or without one (set aside as unreadable). One definition for every query.
CREATE FUNCTION saga_stuck(state text, closed_at timestamptz, deadline_at timestamptz) RETURNS boolean
    LANGUAGE sql STABLE
    RETURN state = 'failed' OR (closed_at IS NULL AND (deadline_at IS NULL OR deadline_at < now()));
-- The oldest open sagas, and the stuck ones, are found among the open ones only.
-- (No index on updated_at: every transition changes it, and the list filters it alongside the
-- created_at order it already walks.)
CREATE INDEX saga_open_created ON saga (created_at) WHERE closed_at IS NULL;
CREATE INDEX saga_failed ON saga (created_at) WHERE state = 'failed';

-- Time spent in from_state before this transition, for step latency (NULL for lines that do not
-- leave a state: starts, resends, refusals).
ALTER TABLE saga_transition ADD COLUMN took_ms double precision;
-- Rows arrive in time order, so a BRIN index finds the last hour's steps for almost no upkeep on
-- the hot path.
CREATE INDEX saga_transition_at ON saga_transition USING brin (at);

-- A message the relay publishes as it is (a replayed dead letter) rather than as an envelope
-- rebuilt from the columns; its headers are in `headers`.
ALTER TABLE outbox ADD COLUMN raw bytea;

-- Dead letters keep the exact bytes that failed (they may not be valid UTF-8 or JSON), where they
-- came from, and the replay that sent them back.
ALTER TABLE dead_letter ALTER COLUMN body TYPE bytea USING convert_to(body, 'UTF8');
ALTER TABLE dead_letter ADD COLUMN exchange text;
ALTER TABLE dead_letter ADD COLUMN routing_key text;
ALTER TABLE dead_letter ADD COLUMN correlation_id uuid;
ALTER TABLE dead_letter ADD COLUMN replay_message_id uuid;
-- The same failure dead-lettered twice (a crash between dead-lettering and acknowledging) is one
-- dead letter; once replayed, a new failure of the same message is a new one.
CREATE UNIQUE INDEX dead_letter_once ON dead_letter (queue, message_id) WHERE replayed_at IS NULL;
CREATE INDEX dead_letter_correlation ON dead_letter (correlation_id);

-- One row per running process and role, refreshed by its heartbeat.
CREATE TABLE worker_instance (
    id           uuid NOT NULL,
    -- orchestrator, warehouse or inventory
    role         text NOT NULL,
    hostname     text NOT NULL,
    pid          integer NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    stopped_at   timestamptz,
    PRIMARY KEY (id, role)
);
CREATE INDEX worker_instance_seen ON worker_instance (last_seen_at);
