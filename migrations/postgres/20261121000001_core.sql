-- Core storage: components, series and the append-only samples log.
CREATE TABLE components (
    name            TEXT PRIMARY KEY NOT NULL,
    component_type  TEXT NOT NULL,
    capabilities    TEXT NOT NULL DEFAULT '[]',
    capacity        BIGINT,
    registered_at   BIGINT NOT NULL,
    last_heartbeat  BIGINT NOT NULL
);

CREATE TABLE series (
    id              BIGSERIAL PRIMARY KEY,
    component       TEXT NOT NULL,
    metric_name     TEXT NOT NULL,
    metric_type     TEXT NOT NULL,
    labels          TEXT NOT NULL,
    help_text       TEXT NOT NULL DEFAULT '',
    unit            TEXT NOT NULL DEFAULT '',
    buckets         TEXT,
    state           TEXT,
    last_bits       BIGINT,
    last_ts         BIGINT,
    deleted         BOOLEAN NOT NULL DEFAULT FALSE,
    UNIQUE (component, metric_name, labels)
);

CREATE TABLE samples (
    seq        BIGSERIAL PRIMARY KEY,
    series_id  BIGINT NOT NULL REFERENCES series(id),
    ts         BIGINT NOT NULL,
    value      DOUBLE PRECISION NOT NULL
);
CREATE INDEX samples_ts ON samples (ts);
CREATE INDEX samples_series_seq ON samples (series_id, seq);

-- Every sample with seq <= checkpoint_seq is reflected in series.last_*.
CREATE TABLE ingest_checkpoint (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    checkpoint_seq  BIGINT NOT NULL
);
INSERT INTO ingest_checkpoint (id, checkpoint_seq) VALUES (1, 0);
