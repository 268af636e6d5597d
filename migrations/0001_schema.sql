-- The system of record for dark-store replenishment (DESIGN.md §2).
--
-- The invariants live here, not only in code: no negative stock, reserved never above on_hand,
-- at most one open replenishment per (store, product), one inbox row per handled message and no
-- stock movement recorded twice for the same cause.

CREATE TABLE store (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    service_area text NOT NULL CHECK (length(service_area) BETWEEN 1 AND 200),
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE product (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    sku        text NOT NULL CHECK (length(sku) BETWEEN 1 AND 64),
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT product_sku_key UNIQUE (sku)
);

CREATE TABLE inventory (
    store_id          uuid NOT NULL REFERENCES store (id),
    product_id        uuid NOT NULL REFERENCES product (id),
    on_hand           bigint NOT NULL,
    reserved          bigint NOT NULL DEFAULT 0,
    reorder_threshold bigint NOT NULL,
    target_level      bigint NOT NULL,
    -- Bumped by every change; the cache compares it so an old value never replaces a newer one.
    version           bigint NOT NULL DEFAULT 1,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (store_id, product_id),
    CONSTRAINT inventory_stock_check CHECK (reserved >= 0 AND on_hand >= reserved),
    CONSTRAINT inventory_levels_check CHECK (reorder_threshold >= 0 AND target_level > reorder_threshold)
);

CREATE TABLE warehouse_stock (
    product_id uuid PRIMARY KEY REFERENCES product (id),
    on_hand    bigint NOT NULL,
    reserved   bigint NOT NULL DEFAULT 0,
    version    bigint NOT NULL DEFAULT 1,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT warehouse_stock_check CHECK (reserved >= 0 AND on_hand >= reserved)
);

CREATE TABLE customer_order (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    store_id        uuid NOT NULL REFERENCES store (id),
    status          text NOT NULL CHECK (status IN ('reserved', 'fulfilled', 'cancelled')),
    idempotency_key text,
    -- The request in canonical form: the same key with another body is a client error, not a replay.
    request_fingerprint text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT customer_order_idempotency_key UNIQUE (idempotency_key)
);

CREATE TABLE order_item (
    order_id   uuid NOT NULL REFERENCES customer_order (id),
    product_id uuid NOT NULL REFERENCES product (id),
    quantity   bigint NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, product_id)
);

-- Append-only ledger. store_id NULL means the central warehouse.
CREATE TABLE stock_movement (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    store_id       uuid REFERENCES store (id),
    product_id     uuid NOT NULL REFERENCES product (id),
    on_hand_delta  bigint NOT NULL,
    reserved_delta bigint NOT NULL,
    reason         text NOT NULL,
    reference      uuid,
    -- The person's words for an adjustment ("damaged in storage").
    note           text,
    at             timestamptz NOT NULL DEFAULT now(),
    CHECK (on_hand_delta <> 0 OR reserved_delta <> 0)
);
CREATE INDEX stock_movement_report ON stock_movement (store_id, product_id, at);
CREATE INDEX stock_movement_at ON stock_movement (at);
-- One movement per cause: a redelivered command cannot write its effect twice.
CREATE UNIQUE INDEX stock_movement_once ON stock_movement (reason, reference, store_id, product_id)
    NULLS NOT DISTINCT WHERE reference IS NOT NULL;

CREATE TABLE saga (
    id          uuid PRIMARY KEY,
    kind        text NOT NULL,
    state       text NOT NULL,
    data        jsonb NOT NULL,
    -- Fencing token: every update is conditional on the version read under the row lock.
    version     bigint NOT NULL DEFAULT 1,
    -- Sends of the outstanding command so far (1 = the first send).
    attempt     integer NOT NULL DEFAULT 0,
    deadline_at timestamptz,
    last_error  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    closed_at   timestamptz
);
-- Only open sagas are indexed on the hot paths: terminal ones must not slow anything down.
CREATE INDEX saga_open_deadline ON saga (deadline_at) WHERE closed_at IS NULL;
CREATE INDEX saga_created ON saga (created_at, id);

CREATE TABLE saga_transition (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    saga_id    uuid NOT NULL REFERENCES saga (id),
    from_state text,
    to_state   text NOT NULL,
    event      text NOT NULL,
    -- false for an event the transition function refused: recorded for the timeline, not applied.
    applied    boolean NOT NULL DEFAULT true,
    detail     jsonb NOT NULL DEFAULT '{}'::jsonb,
    actor      text NOT NULL DEFAULT 'engine',
    at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX saga_transition_saga ON saga_transition (saga_id, id);

CREATE TABLE replenishment (
    -- Deferred: the row is claimed first (its unique index is the guard against a second open
    -- replenishment) and the saga row follows in the same transaction.
    saga_id            uuid PRIMARY KEY REFERENCES saga (id) DEFERRABLE INITIALLY DEFERRED,
    store_id           uuid NOT NULL REFERENCES store (id),
    product_id         uuid NOT NULL REFERENCES product (id),
    quantity_requested bigint NOT NULL CHECK (quantity_requested > 0),
    quantity_shipped   bigint CHECK (quantity_shipped >= 0),
    shipment_id        uuid,
    status             text NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    closed_at          timestamptz
);
-- At most one open replenishment per (store, product): a duplicate low-stock signal cannot open a second.
CREATE UNIQUE INDEX replenishment_one_open ON replenishment (store_id, product_id) WHERE closed_at IS NULL;
CREATE INDEX replenishment_store_product ON replenishment (store_id, product_id);

-- Warehouse side of a replenishment. One row per replenishment: a cancel that arrives before the
-- dispatch leaves a 'cancelled' row behind, so the late dispatch finds it and ships nothing.
CREATE TABLE shipment (
    id               uuid PRIMARY KEY,
    replenishment_id uuid NOT NULL,
    store_id         uuid NOT NULL REFERENCES store (id),
    product_id       uuid NOT NULL REFERENCES product (id),
    quantity         bigint NOT NULL CHECK (quantity >= 0),
    status           text NOT NULL CHECK (status IN ('dispatched', 'received', 'cancelled')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT shipment_one_per_replenishment UNIQUE (replenishment_id)
);
CREATE INDEX shipment_in_transit ON shipment (product_id) WHERE status = 'dispatched';

CREATE TABLE outbox (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id     uuid NOT NULL UNIQUE,
    -- Logical exchange name; the relay adds the deployment's NAMESPACE prefix.
    exchange       text NOT NULL,
    routing_key    text NOT NULL,
    message_type   text NOT NULL,
    correlation_id uuid,
    headers        jsonb NOT NULL DEFAULT '{}'::jsonb,
    body           jsonb NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    published_at   timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
CREATE INDEX outbox_correlation ON outbox (correlation_id);
-- No NOTIFY trigger: NOTIFY takes a database-wide lock at commit, which serialized every
-- transaction that wrote the outbox. Each process wakes its own relay instead.

CREATE TABLE inbox (
    consumer       text NOT NULL,
    message_id     uuid NOT NULL,
    message_type   text,
    correlation_id uuid,
    received_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);
CREATE INDEX inbox_correlation ON inbox (correlation_id);

CREATE TABLE dead_letter (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue        text NOT NULL,
    reason       text NOT NULL,
    message_id   text,
    message_type text,
    headers      jsonb NOT NULL DEFAULT '{}'::jsonb,
    body         text NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    replayed_at  timestamptz
);
