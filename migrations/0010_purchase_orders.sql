-- Purchase orders (orchestrator/sagas/src/purchase_order.rs): the warehouse reorders from its
-- suppliers when its stock of a product runs low (its reorder levels: 0009).

-- The purchase order's row, kept in step with its saga (after_transition), as `replenishment` is.
-- Deferred: the row is claimed first (its unique index is the guard against a second open order)
-- and the saga follows in the same transaction. Deleted with its saga by retention.
CREATE TABLE purchase_order (
    saga_id    uuid PRIMARY KEY REFERENCES saga (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    product_id uuid NOT NULL REFERENCES product (id),
    quantity   bigint NOT NULL CHECK (quantity > 0),
    status     text NOT NULL CHECK (
        status IN ('requested', 'confirmed', 'received', 'cancelling', 'cancelled', 'failed', 'resolved')
    ),
    created_at timestamptz NOT NULL DEFAULT now(),
    closed_at  timestamptz
);
-- At most one open purchase order per product: a second low signal, or an operator's order
-- while one is open, claims nothing.
CREATE UNIQUE INDEX purchase_order_one_open ON purchase_order (product_id) WHERE closed_at IS NULL;

-- The supplier's side (participants/src/supplier.rs), a record the supplier keeps: what it was
-- asked for, and whether it shipped. Keyed by the purchase order's id, without a foreign key: it
-- is the supplier's, not the saga's.
CREATE TABLE supplier_order (
    purchase_id uuid PRIMARY KEY,
    product_id  uuid NOT NULL,
    quantity    bigint NOT NULL CHECK (quantity >= 0),
    status      text NOT NULL CHECK (status IN ('accepted', 'shipped', 'declined', 'cancelled')),
    -- When an accepted order ships: its simulated lead time after it was accepted.
    ships_at    timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX supplier_order_due ON supplier_order (ships_at) WHERE status = 'accepted';
