-- Core storage: components, series and the append-only samples log.
CREATE TABLE components (
    name            TEXT PRIMARY KEY NOT NULL,
    component_type  TEXT NOT NULL,
    capabilities    TEXT NOT NULL DEFAULT '[]',
    capacity        INTEGER,
    registered_at   INTEGER NOT NULL,
    last_heartbeat  INTEGER NOT NULL
);

CREATE TABLE series (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    component       TEXT NOT NULL,
    metric_name     TEXT NOT NULL,
    metric_type     TEXT NOT NULL,
    labels          TEXT NOT NULL,
    help_text       TEXT NOT NULL DEFAULT '',
    unit            TEXT NOT NULL DEFAULT '',
    buckets         TEXT,
    -- histogram/summary aggregate (JSON), written with every commit
    state           TEXT,
    -- latest value (f64 bits) and timestamp as of the ingest checkpoint
    last_bits       INTEGER,
    last_ts         INTEGER,
    deleted         INTEGER NOT NULL DEFAULT 0,
    UNIQUE (component, metric_name, labels)
);

CREATE TABLE samples (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    series_id  INTEGER NOT NULL REFERENCES series(id),
    ts         INTEGER NOT NULL,
    value      REAL NOT NULL
);
-- No (series_id, …) index: with many live series its random inserts cost more
-- than half the ingest rate. Series-filtered queries use seq order or the time
-- index; latest values come from the checkpoint in `series`.
CREATE INDEX samples_ts ON samples (ts);

-- Every sample with seq <= checkpoint_seq is reflected in series.last_*.
CREATE TABLE ingest_checkpoint (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    checkpoint_seq  INTEGER NOT NULL
);
INSERT INTO ingest_checkpoint (id, checkpoint_seq) VALUES (1, 0);
