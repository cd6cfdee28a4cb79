-- Durable delivery to publisher plugins: one cursor per publisher over the
-- samples log, and the items receivers refused for good.
CREATE TABLE publisher_cursors (
    publisher        TEXT PRIMARY KEY NOT NULL,
    cursor_seq       BIGINT NOT NULL,
    delivered        BIGINT NOT NULL DEFAULT 0,
    dead_lettered    BIGINT NOT NULL DEFAULT 0,
    last_success_at  BIGINT,
    last_error       TEXT,
    last_error_at    BIGINT,
    updated_at       BIGINT NOT NULL
);

CREATE TABLE dead_letters (
    id          BIGSERIAL PRIMARY KEY,
    publisher   TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    item        TEXT NOT NULL,
    reason      TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX dead_letters_publisher ON dead_letters (publisher, id);
