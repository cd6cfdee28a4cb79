-- Retention kept longer or shorter than --retention for one metric name or
-- one component (NoETL's ttl/set and ttl/extend-component, issue 10).
CREATE TABLE retention_rules (
    scope   TEXT NOT NULL CHECK (scope IN ('metric', 'component')),
    name    TEXT NOT NULL,
    ttl_ms  BIGINT NOT NULL,
    PRIMARY KEY (scope, name)
);
