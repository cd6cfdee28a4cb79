//! The WebAssembly plugin runtime: the wasmtime engine and its compile cache
//! (`engine`), the generated bindings of the `vigil:plugin` worlds
//! (`bindings`), manifests and config checks (`manifest`), the sandbox each
//! instance runs in (`sandbox`), supervision of one plugin (`plugin`) and the
//! watched plugin directory (`registry`). Delivery to publishers lives in
//! `bus`; the HTTP status routes in `api::plugins`.

pub mod bindings;
pub mod cli;
pub mod engine;
pub mod manifest;
pub mod plugin;
pub mod registry;
pub mod sandbox;
mod scaffold;
pub mod versions;

pub use engine::{PluginEngine, Tier};
pub use plugin::{CallError, Notified, Plugin, PluginCondition, PluginKind};
pub use registry::{PluginRegistry, ReloadOutcome, ServingHook};

/// Hex SHA-256 of a file's bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
