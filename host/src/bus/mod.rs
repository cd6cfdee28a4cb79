//! Event log, publisher cursors and delivery. Not built yet (a later issue).
