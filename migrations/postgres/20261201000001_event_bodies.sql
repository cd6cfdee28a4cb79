-- Events are kept exactly as sent: `body` holds the event's JSON object
-- (non-finite numbers as Python writes them), `event_ts` its time as unix
-- seconds (sub-millisecond precision, for filters and ordering). The old
-- `attributes` (the fields besides the indexed ones) and millisecond
-- `event_time` are folded into `body`. Retention walks events in seq order
-- (seq follows receive time), so `received_at` needs no index.
ALTER TABLE events ADD COLUMN body TEXT, ADD COLUMN event_ts DOUBLE PRECISION;

UPDATE events SET
  event_ts = event_time / 1000.0,
  body = (replace(attributes, '\u0000', '\ufffd')::jsonb || jsonb_strip_nulls(jsonb_build_object(
           'event_id', event_id, 'event_type', event_type, 'event_time', event_time / 1000.0,
           'session_id', session_id, 'workflow_id', workflow_id, 'task_id', task_id,
           'backend', backend)))::text;

ALTER TABLE events ALTER COLUMN body SET NOT NULL, ALTER COLUMN event_ts SET NOT NULL;
DROP INDEX IF EXISTS events_time;
DROP INDEX IF EXISTS events_received;
DROP INDEX IF EXISTS events_session;
DROP INDEX IF EXISTS events_workflow;
DROP INDEX IF EXISTS events_task;
ALTER TABLE events DROP COLUMN attributes, DROP COLUMN event_time;
CREATE INDEX events_ts ON events (event_ts);
CREATE INDEX events_session ON events (session_id, seq) WHERE session_id IS NOT NULL;
CREATE INDEX events_workflow ON events (workflow_id, seq) WHERE workflow_id IS NOT NULL;
CREATE INDEX events_task ON events (task_id, seq) WHERE task_id IS NOT NULL;
