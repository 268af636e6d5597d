-- Every status column names the values the code's enums can take: a typo in a query, or a row
-- written by a process of another version, is refused by the schema instead of stored.

-- The replenishment row mirrors its saga's state (sagas/src/replenishment.rs, `State`).
ALTER TABLE replenishment ADD CONSTRAINT replenishment_status_check CHECK (
    status IN ('requested', 'dispatched', 'received', 'compensating', 'compensated', 'failed', 'resolved')
);
