-- Events are kept exactly as sent: `body` holds the event's JSON object
-- (non-finite numbers as Python writes them), `event_ts` its time as unix
-- seconds (sub-millisecond precision, for filters and ordering). The old
-- `attributes` (the fields besides the indexed ones) and millisecond
-- `event_time` are folded into `body`. Retention walks events in seq order
-- (seq follows receive time), so `received_at` needs no index.
CREATE TABLE events_v2 (
    seq          INTEGER PRIMARY KEY,
    event_id     TEXT NOT NULL UNIQUE,
    event_type   TEXT NOT NULL,
    event_ts     REAL NOT NULL,
    session_id   TEXT,
    workflow_id  TEXT,
    task_id      TEXT,
    backend      TEXT,
    -- provenance scopes: the event's string fields of these names (at the
    -- top level, else in `attributes`)
    execution_id    TEXT,
    source_id       TEXT,
    project_module  TEXT,
    body         TEXT NOT NULL,
    received_at  INTEGER NOT NULL
);

INSERT INTO events_v2 (seq, event_id, event_type, event_ts, session_id, workflow_id, task_id,
                       backend, execution_id, source_id, project_module, body, received_at)
SELECT seq, event_id, event_type, event_time / 1000.0, session_id, workflow_id, task_id, backend,
       CASE WHEN json_type(attributes, '$.execution_id') = 'text'
            THEN json_extract(attributes, '$.execution_id') END,
       CASE WHEN json_type(attributes, '$.source_id') = 'text'
            THEN json_extract(attributes, '$.source_id') END,
       CASE WHEN json_type(attributes, '$.project_module') = 'text'
            THEN json_extract(attributes, '$.project_module') END,
       json_set(
         CASE WHEN backend IS NULL THEN j3 ELSE json_set(j3, '$.backend', backend) END,
         '$.event_id', event_id, '$.event_type', event_type, '$.event_time', event_time / 1000.0),
       received_at
FROM (
  SELECT *,
         CASE WHEN task_id IS NULL THEN j2 ELSE json_set(j2, '$.task_id', task_id) END AS j3
  FROM (
    SELECT *,
           CASE WHEN workflow_id IS NULL THEN j1 ELSE json_set(j1, '$.workflow_id', workflow_id) END AS j2
    FROM (
      SELECT *,
             CASE WHEN session_id IS NULL THEN attributes
                  ELSE json_set(attributes, '$.session_id', session_id) END AS j1
      FROM events)));

DROP TABLE events;
ALTER TABLE events_v2 RENAME TO events;
CREATE INDEX events_ts ON events (event_ts);
CREATE INDEX events_type ON events (event_type, seq);
CREATE INDEX events_session ON events (session_id, seq) WHERE session_id IS NOT NULL;
CREATE INDEX events_workflow ON events (workflow_id, seq) WHERE workflow_id IS NOT NULL;
CREATE INDEX events_task ON events (task_id, seq) WHERE task_id IS NOT NULL;
CREATE INDEX events_execution ON events (execution_id, seq) WHERE execution_id IS NOT NULL;
CREATE INDEX events_source ON events (source_id, seq) WHERE source_id IS NOT NULL;
CREATE INDEX events_project ON events (project_module, seq) WHERE project_module IS NOT NULL;
