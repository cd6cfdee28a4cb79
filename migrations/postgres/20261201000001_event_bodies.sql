-- Events are kept exactly as sent: `body` holds the event's JSON object
-- (non-finite numbers as Python writes them), `event_ts` its time as unix
-- seconds (sub-millisecond precision, for filters and ordering). The old
-- `attributes` (the fields besides the indexed ones) and millisecond
-- `event_time` are folded into `body`. Retention walks events in seq order
-- (seq follows receive time), so `received_at` needs no index.
-- execution_id, source_id, project_module: the provenance scopes (the
-- event's string fields of these names, at the top level, else in `attributes`).
ALTER TABLE events ADD COLUMN body TEXT, ADD COLUMN event_ts DOUBLE PRECISION,
  ADD COLUMN execution_id TEXT, ADD COLUMN source_id TEXT, ADD COLUMN project_module TEXT;

UPDATE events SET
  event_ts = event_time / 1000.0,
  execution_id = CASE WHEN json_typeof(attributes::json -> 'execution_id') = 'string'
                      THEN attributes::json ->> 'execution_id' END,
  source_id = CASE WHEN json_typeof(attributes::json -> 'source_id') = 'string'
                   THEN attributes::json ->> 'source_id' END,
  project_module = CASE WHEN json_typeof(attributes::json -> 'project_module') = 'string'
                        THEN attributes::json ->> 'project_module' END,
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
CREATE INDEX events_execution ON events (execution_id, seq) WHERE execution_id IS NOT NULL;
CREATE INDEX events_source ON events (source_id, seq) WHERE source_id IS NOT NULL;
CREATE INDEX events_project ON events (project_module, seq) WHERE project_module IS NOT NULL;
