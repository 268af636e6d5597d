-- The warehouse's own reorder levels, per product: the point at or below which its stock of the
-- product is to be reordered from a supplier (counting what is on order), and the level a reorder
-- brings it up to. A product without a point is never reordered on its own.
ALTER TABLE warehouse_stock
    ADD COLUMN reorder_point  bigint CHECK (reorder_point >= 0),
    ADD COLUMN reorder_target bigint CHECK (reorder_target > 0),
    ADD CONSTRAINT warehouse_stock_reorder_check CHECK (reorder_target > reorder_point);
