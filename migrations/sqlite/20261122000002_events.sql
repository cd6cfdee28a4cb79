-- Lifecycle and custom events: the second half of the append-only log.
-- Events share the samples' sequence space, so one publisher cursor covers
-- both: an event's seq is taken from the samples' AUTOINCREMENT counter
-- (sqlite_sequence) inside the write transaction.
CREATE TABLE events (
    seq          INTEGER PRIMARY KEY,
    event_id     TEXT NOT NULL UNIQUE,
    event_type   TEXT NOT NULL,
    event_time   INTEGER NOT NULL,
    session_id   TEXT,
    workflow_id  TEXT,
    task_id      TEXT,
    backend      TEXT,
    -- the event's other fields, as a JSON object
    attributes   TEXT NOT NULL,
    received_at  INTEGER NOT NULL
);
CREATE INDEX events_time ON events (event_time);
-- retention deletes by receive time
CREATE INDEX events_received ON events (received_at);
CREATE INDEX events_type ON events (event_type, seq);
CREATE INDEX events_session ON events (session_id, seq);
CREATE INDEX events_workflow ON events (workflow_id, seq);
CREATE INDEX events_task ON events (task_id, seq);

-- Make sure the shared counter exists before the first sample.
INSERT INTO sqlite_sequence (name, seq)
SELECT 'samples', COALESCE((SELECT MAX(seq) FROM samples), 0)
WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'samples');
