-- Alerting (issue 12): notification channels and the record of every
-- delivery. A channel names a notifier plugin; `config` holds its public
-- settings (JSON object), `secrets` the write-only ones (never returned).
-- A delivery is one notification (a group of alerts) to one channel, with
-- every attempt's outcome; `n` is the paging key.
CREATE TABLE notification_channels (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    plugin        TEXT NOT NULL,
    config        TEXT NOT NULL,
    secrets       TEXT NOT NULL,
    send_resolved INTEGER NOT NULL,
    enabled       INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE TABLE alert_deliveries (
    n               INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    channel_id      TEXT NOT NULL,
    rule_id         TEXT,
    group_key       TEXT NOT NULL,
    kind            TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    response_status INTEGER,
    last_error      TEXT,
    receipt         TEXT,
    alerts          TEXT NOT NULL,
    payload         TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    next_attempt_at INTEGER
);
CREATE INDEX alert_deliveries_channel ON alert_deliveries (channel_id, n);
CREATE INDEX alert_deliveries_rule ON alert_deliveries (rule_id, n);
CREATE INDEX alert_deliveries_status ON alert_deliveries (status, next_attempt_at);
