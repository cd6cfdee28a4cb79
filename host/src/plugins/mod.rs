//! The wasmtime plugin runtime. Not built yet (a later issue).
