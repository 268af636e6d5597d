-- Retention (orchestrator/platform/src/retention.rs): published outbox rows, inbox rows past the
-- deduplication window and long-closed sagas are deleted in small batches.

-- Each batch takes the oldest rows past their retention through these indexes, so it never scans
-- the hot tables. IF NOT EXISTS: on a deployment whose tables are already large, build them first
-- with CREATE INDEX CONCURRENTLY under these names, and this migration keeps them instead of
-- holding writes while it builds its own.
CREATE INDEX IF NOT EXISTS outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS inbox_received ON inbox (received_at);
-- A failed saga is closed but waits for an operator (saga_stuck): it is never removed, so it is
-- left out of the index too.
CREATE INDEX IF NOT EXISTS saga_closed ON saga (closed_at) WHERE closed_at IS NOT NULL AND state <> 'failed';

-- A saga's timeline and its kind's row belong to it: deleting the saga deletes them. These are
-- the only foreign keys to saga (id). The rows keyed by a saga's id without one (customer_order,
-- payment, pick, shipment) are the domain's records, not the saga's, and stay.
ALTER TABLE saga_transition
    DROP CONSTRAINT saga_transition_saga_id_fkey,
    ADD CONSTRAINT saga_transition_saga_id_fkey FOREIGN KEY (saga_id) REFERENCES saga (id) ON DELETE CASCADE;
-- Still deferred (the row is claimed before its saga is written, see 0001); the cascade itself
-- is never deferred.
ALTER TABLE replenishment
    DROP CONSTRAINT replenishment_saga_id_fkey,
    ADD CONSTRAINT replenishment_saga_id_fkey FOREIGN KEY (saga_id) REFERENCES saga (id)
        ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED;
