-- Durable delivery to publisher plugins: one cursor per publisher over the
-- samples log, and the items receivers refused for good.
CREATE TABLE publisher_cursors (
    publisher        TEXT PRIMARY KEY NOT NULL,
    cursor_seq       INTEGER NOT NULL,
    delivered        INTEGER NOT NULL DEFAULT 0,
    dead_lettered    INTEGER NOT NULL DEFAULT 0,
    last_success_at  INTEGER,
    last_error       TEXT,
    last_error_at    INTEGER,
    updated_at       INTEGER NOT NULL
);

CREATE TABLE dead_letters (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    publisher   TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    item        TEXT NOT NULL,
    reason      TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX dead_letters_publisher ON dead_letters (publisher, id);
