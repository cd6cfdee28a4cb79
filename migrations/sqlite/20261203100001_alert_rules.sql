-- Alert rules (issue 12). `spec` is the rule as the API accepts it (JSON,
-- checked before it is stored); `state` of a rule is its evaluator's
-- memory — the alerts it holds (pending, firing, kept firing) and its
-- notification groups with their timers — so a restart continues where the
-- last evaluation left off, as Prometheus restores `for` state.
CREATE TABLE alert_rules (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    spec       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE alert_rule_state (
    rule_id    TEXT PRIMARY KEY,
    state      TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
-- Silences (Alertmanager's shape, JSON in `body`); `ends_at` for listing.
CREATE TABLE alert_silences (
    id         TEXT PRIMARY KEY,
    body       TEXT NOT NULL,
    ends_at    INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
