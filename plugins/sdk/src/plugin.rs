//! What every kind of plugin shares: [`PluginInfo`] (the `describe` answer) and
//! the slot that keeps the configured instance between calls.
//!
//! A component instance is single-threaded and never re-entered, so the instance
//! lives in a `thread_local!` `RefCell` declared by the `export_*!` macro in the
//! author's crate; the functions here only borrow it.

use std::cell::RefCell;
use std::thread::LocalKey;

use crate::bindings::publisher::vigil::plugin::types as wit;

/// A plugin's self-description.
///
/// The `export_*!` macros fill it from the author crate's Cargo metadata
/// (`name`, `version`, `description`) and the trait's `config_schema()`; a
/// plugin changes it by overriding the trait's `info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// Short machine name, e.g. `elasticsearch`.
    pub name: String,
    /// The plugin's own version (semver).
    pub version: String,
    /// One line for humans.
    pub description: String,
    /// JSON Schema of the configuration object; `{}` accepts anything.
    pub config_schema: String,
}

impl PluginInfo {
    /// From Cargo metadata (what the `export_*!` macros pass).
    pub fn from_package(
        name: &str,
        version: &str,
        description: &str,
        config_schema: String,
    ) -> PluginInfo {
        PluginInfo {
            name: name.to_string(),
            version: version.to_string(),
            description: description.to_string(),
            config_schema,
        }
    }

    pub(crate) fn into_wit(self, kind: wit::PluginKind) -> wit::PluginInfo {
        wit::PluginInfo {
            name: self.name,
            version: self.version,
            kind,
            description: self.description,
            config_schema: self.config_schema,
        }
    }
}

/// Where the `export_*!` macros keep the configured instance.
pub type InstanceSlot<T> = LocalKey<RefCell<Option<T>>>;

pub(crate) fn configure_slot<T: 'static>(
    slot: &'static InstanceSlot<T>,
    make: impl FnOnce() -> Result<T, String>,
) -> Result<(), String> {
    crate::log::install_panic_hook();
    // Drop any previous instance first: a failed reconfiguration leaves none.
    slot.with(|cell| cell.borrow_mut().take());
    let instance = make()?;
    slot.with(|cell| *cell.borrow_mut() = Some(instance));
    Ok(())
}

/// Runs `call` on the configured instance; `None` when `configure` has not
/// succeeded yet.
pub(crate) fn with_instance<T: 'static, R>(
    slot: &'static InstanceSlot<T>,
    call: impl FnOnce(&mut T) -> R,
) -> Option<R> {
    slot.with(|cell| {
        let mut guard = cell.borrow_mut();
        guard.as_mut().map(call)
    })
}

pub(crate) const NOT_CONFIGURED: &str =
    "plugin is not configured: the host must call `configure` (successfully) first";
