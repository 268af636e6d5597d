-- Order fulfilment as a saga (sagas/src/fulfilment.rs): an order is paid, picked and handed over,
-- or unwound (refund, release). The saga's id is the order's id.

-- What a unit costs, in cents; an order keeps the prices it was placed at.
ALTER TABLE product ADD COLUMN price_cents bigint NOT NULL DEFAULT 100
    CONSTRAINT product_price_check CHECK (price_cents BETWEEN 0 AND 100000000);
ALTER TABLE order_item ADD COLUMN unit_price_cents bigint NOT NULL DEFAULT 0
    CONSTRAINT order_item_price_check CHECK (unit_price_cents >= 0);

-- The order's status follows its fulfilment saga.
ALTER TABLE customer_order DROP CONSTRAINT customer_order_status_check;
ALTER TABLE customer_order ADD CONSTRAINT customer_order_status_check
    CHECK (status IN ('reserved', 'paid', 'cancelling', 'fulfilled', 'cancelled', 'failed'));

-- The payment provider's side (the payment worker): one row per order, so a charge or refund
-- sent again gets the same answer and moves no money twice. A refund that arrives before its
-- charge leaves a 'voided' row, so the late charge is declined.
CREATE TABLE payment (
    order_id     uuid PRIMARY KEY,
    amount_cents bigint NOT NULL CHECK (amount_cents >= 0),
    status       text NOT NULL CHECK (status IN ('charged', 'declined', 'refunded', 'voided')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- The store's side (the inventory worker and the picker): one row per paid order on the pick list.
-- A release that comes first leaves a 'released' row, so a late hand-over is refused.
CREATE TABLE pick (
    order_id   uuid PRIMARY KEY,
    store_id   uuid NOT NULL REFERENCES store (id),
    status     text NOT NULL CHECK (status IN ('picking', 'handed_over', 'released', 'failed')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pick_open ON pick (store_id, created_at) WHERE status = 'picking';
