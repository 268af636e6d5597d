-- The engine knows a saga's states only as its kind declares them (platform/src/saga, `Awaits`),
-- and what a saga concerns only as its kind says: no query names a kind's state any more.

-- What the saga waits on in its state: a participant's answer, a person's, an operator, or
-- nothing (done). Stuck sagas, the operators' lists and retention read it.
ALTER TABLE saga ADD COLUMN awaits text NOT NULL DEFAULT 'participant'
    CONSTRAINT saga_awaits_check CHECK (awaits IN ('participant', 'person', 'operator', 'nothing'));
-- Sagas written before: the states the two kinds of then declare, as their code says.
UPDATE saga SET awaits = CASE
    WHEN state = 'failed' THEN 'operator'
    WHEN closed_at IS NOT NULL THEN 'nothing'
    WHEN kind = 'order_fulfilment' AND state = 'charged' THEN 'person'
    ELSE 'participant' END;
ALTER TABLE saga ALTER COLUMN awaits DROP DEFAULT;

-- Stuck: waiting for an operator, or open with nothing that will move it: past its deadline (no
-- engine is sweeping) or without one (set aside as unreadable).
DROP FUNCTION saga_stuck(text, timestamptz, timestamptz);
CREATE FUNCTION saga_stuck(awaits text, closed_at timestamptz, deadline_at timestamptz) RETURNS boolean
    LANGUAGE sql STABLE
    RETURN awaits = 'operator' OR (closed_at IS NULL AND (deadline_at IS NULL OR deadline_at < now()));
DROP INDEX saga_failed;
CREATE INDEX saga_awaiting_operator ON saga (created_at) WHERE awaits = 'operator';
-- A saga waiting for an operator is closed, but kept until someone acts on it.
DROP INDEX saga_closed;
CREATE INDEX saga_closed ON saga (closed_at) WHERE closed_at IS NOT NULL AND awaits <> 'operator';

-- What a saga concerns, as its kind declares it: a store (none for the warehouse's own sagas)
-- and the products. Written once, with the saga, never updated: the lists filter on it without
-- costing the saga's updates an index entry each.
CREATE TABLE saga_concern (
    saga_id    uuid NOT NULL REFERENCES saga (id) ON DELETE CASCADE,
    store_id   uuid,
    product_id uuid
);
CREATE INDEX saga_concern_saga ON saga_concern (saga_id);
CREATE INDEX saga_concern_store ON saga_concern (store_id, saga_id);
CREATE INDEX saga_concern_product ON saga_concern (product_id, saga_id);
-- Sagas written before: a replenishment names its store and product; an order its store and the
-- products of its lines. A saga naming no product still concerns its store, as the engine writes it.
INSERT INTO saga_concern (saga_id, store_id, product_id)
SELECT s.id, (s.data->>'store_id')::uuid, p.product_id
FROM saga s
LEFT JOIN LATERAL (
    SELECT (s.data->>'product_id')::uuid AS product_id WHERE s.data ? 'product_id'
    UNION ALL
    SELECT (line->>'product_id')::uuid FROM jsonb_array_elements(
        CASE WHEN jsonb_typeof(s.data->'items') = 'array' THEN s.data->'items' ELSE '[]'::jsonb END) AS line
) p ON true
WHERE s.data ? 'store_id' OR p.product_id IS NOT NULL;
