-- The relay's work list moves out of the message rows (messaging/outbox.rs).
--
-- Marking a message published used to update its outbox row: a new version of the whole row,
-- body included, with an entry in each of its four indexes, for every message sent. Now a
-- message waiting for the broker has a row here, a few bytes with one index entry, which the
-- relay deletes once the broker confirms it. The message row is written once and never updated;
-- it stays for the saga detail until retention removes it.
CREATE TABLE outbox_pending (
    -- No foreign key: its check would cost every insert a lookup, and nothing removes a message
    -- row while it waits here (retention takes only published ones).
    id bigint PRIMARY KEY
);
-- Rows come and go all the time: vacuum it after a fixed number of them, not a fraction of a
-- table that is nearly always empty.
ALTER TABLE outbox_pending SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);

INSERT INTO outbox_pending (id) SELECT id FROM outbox WHERE published_at IS NULL;

-- Goes with its two partial indexes (waiting, and published for retention): retention now takes
-- the oldest rows by id, which the primary key orders.
ALTER TABLE outbox DROP COLUMN published_at;
-- Message ids are generated unique (v7 for messages, v4 for replays); the index only cost writes.
ALTER TABLE outbox DROP CONSTRAINT outbox_message_id_key;
