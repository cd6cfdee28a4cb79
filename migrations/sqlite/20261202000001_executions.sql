-- Execution records (issue 13). `n` is the creation order used for cursor
-- paging; `version` makes every update a compare-and-swap. JSON columns hold
-- objects. A state change writes its vigil.ExecutionStateChanged event to
-- `events` in the same transaction.
CREATE TABLE executions (
    n              INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT NOT NULL UNIQUE,
    backend        TEXT NOT NULL,
    project_module TEXT,
    source_id      TEXT,
    state          TEXT NOT NULL,
    scheduler_ids  TEXT NOT NULL,
    profile        TEXT NOT NULL,
    attributes     TEXT NOT NULL,
    state_times    TEXT NOT NULL,
    run_record     TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    version        INTEGER NOT NULL
);
CREATE INDEX executions_state ON executions (state, backend);
CREATE INDEX executions_backend ON executions (backend, n);
CREATE INDEX executions_project ON executions (project_module, n);
CREATE INDEX executions_source ON executions (source_id, n);
CREATE INDEX executions_created ON executions (created_at);
