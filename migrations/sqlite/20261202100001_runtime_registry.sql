-- NoETL's runtime registry as a view of the one component registry (issue 10):
-- a stable numeric runtime_id per component, NoETL's status (ready, offline, …),
-- the address workers register with, their runtime description and labels (JSON).
ALTER TABLE components ADD COLUMN runtime_id INTEGER;
UPDATE components SET runtime_id = rowid;
CREATE UNIQUE INDEX components_runtime_id ON components (runtime_id);
ALTER TABLE components ADD COLUMN status TEXT NOT NULL DEFAULT 'ready';
ALTER TABLE components ADD COLUMN uri TEXT;
ALTER TABLE components ADD COLUMN runtime TEXT;
ALTER TABLE components ADD COLUMN labels TEXT;
ALTER TABLE components ADD COLUMN updated_at INTEGER NOT NULL DEFAULT 0;
UPDATE components SET updated_at = last_heartbeat;
