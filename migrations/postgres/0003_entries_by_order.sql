-- Reconciliation reads every order's entries: look them up by order, not by scanning.
CREATE INDEX entries_order ON entries (order_id);
