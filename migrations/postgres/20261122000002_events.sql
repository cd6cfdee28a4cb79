-- Lifecycle and custom events: the second half of the append-only log.
-- Events take their seq from the samples' sequence, so one publisher cursor
-- covers both. Appends to either table hold the transaction-scoped advisory
-- lock `log append` while they take sequence numbers, so sequence order is
-- commit order even with several replicas writing.
CREATE TABLE events (
    seq          BIGINT PRIMARY KEY DEFAULT nextval('samples_seq_seq'::regclass),
    event_id     TEXT NOT NULL UNIQUE,
    event_type   TEXT NOT NULL,
    event_time   BIGINT NOT NULL,
    session_id   TEXT,
    workflow_id  TEXT,
    task_id      TEXT,
    backend      TEXT,
    attributes   TEXT NOT NULL,
    received_at  BIGINT NOT NULL
);
CREATE INDEX events_time ON events (event_time);
-- retention deletes by receive time
CREATE INDEX events_received ON events (received_at);
CREATE INDEX events_type ON events (event_type, seq);
CREATE INDEX events_session ON events (session_id, seq);
CREATE INDEX events_workflow ON events (workflow_id, seq);
CREATE INDEX events_task ON events (task_id, seq);
