-- A conversation's turns in order (occurred_at, received_at, id): search reads the turn just
-- before and just after each candidate's source turns (Store.turn_context) with one seek each.
-- It leads with events_conv's columns, so it serves every lookup that one did.
CREATE INDEX events_turn_order ON events (org_id, user_id, conv_id, occurred_at, received_at, id);
DROP INDEX events_conv;
