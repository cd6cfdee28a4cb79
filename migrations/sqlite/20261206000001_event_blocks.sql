-- Event scopes and times indexed per block of the log instead of per event.
--
-- A block is 4,096 consecutive seqs (`seq >> 12`). Every event used to cost
-- eight B-tree entries (its row, `event_id`, time, type, session, workflow,
-- task and the provenance scopes); the scopes a block's events share (one
-- session and a few dozen workflows in a RHAPSODY batch) now cost one row
-- per block and value, and the event times one row per block with the
-- block's earliest and latest time, as PostgreSQL's BRIN indexes keep a
-- range per block of a table. A listing by session, workflow or provenance
-- scope reads the blocks that hold the value and filters their events; a
-- time range narrows the seqs to the blocks whose times overlap it. The
-- type and task indexes stay per event: a rare type (`TaskFailed`) would
-- be in most blocks, and a task's events are spread over many.
CREATE TABLE event_keys (
    -- 1 session_id, 2 workflow_id, 3 execution_id, 4 source_id, 5 project_module
    kind   INTEGER NOT NULL,
    value  TEXT NOT NULL,
    block  INTEGER NOT NULL,
    PRIMARY KEY (kind, value, block)
) WITHOUT ROWID;
-- retention drops the rows of blocks it emptied
CREATE INDEX event_keys_block ON event_keys (block);

CREATE TABLE event_blocks (
    block   INTEGER PRIMARY KEY,
    min_ts  REAL NOT NULL,
    max_ts  REAL NOT NULL
);
CREATE INDEX event_blocks_max ON event_blocks (max_ts);

INSERT INTO event_blocks (block, min_ts, max_ts)
SELECT seq >> 12, MIN(event_ts), MAX(event_ts) FROM events GROUP BY seq >> 12;

INSERT INTO event_keys (kind, value, block)
SELECT DISTINCT 1, session_id, seq >> 12 FROM events WHERE session_id IS NOT NULL
UNION SELECT DISTINCT 2, workflow_id, seq >> 12 FROM events WHERE workflow_id IS NOT NULL
UNION SELECT DISTINCT 3, execution_id, seq >> 12 FROM events WHERE execution_id IS NOT NULL
UNION SELECT DISTINCT 4, source_id, seq >> 12 FROM events WHERE source_id IS NOT NULL
UNION SELECT DISTINCT 5, project_module, seq >> 12 FROM events WHERE project_module IS NOT NULL;

DROP INDEX events_ts;
DROP INDEX events_session;
DROP INDEX events_workflow;
DROP INDEX events_execution;
DROP INDEX events_source;
DROP INDEX events_project;
