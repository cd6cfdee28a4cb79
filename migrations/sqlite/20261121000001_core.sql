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
    -- aggregate checkpoint (JSON) and the last sample sequence it includes
    state           TEXT,
    state_seq       INTEGER NOT NULL DEFAULT 0,
    deleted         INTEGER NOT NULL DEFAULT 0,
    UNIQUE (component, metric_name, labels)
);

CREATE TABLE samples (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    series_id  INTEGER NOT NULL REFERENCES series(id),
    ts         INTEGER NOT NULL,
    value      REAL NOT NULL
);
CREATE INDEX samples_ts ON samples (ts);
CREATE INDEX samples_series_seq ON samples (series_id, seq);
