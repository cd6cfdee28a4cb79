//! Debug-field providers: the [`DebugFields`] trait and
//! [`export_debug_fields!`](crate::export_debug_fields).
//!
//! A provider adds backend-specific fields (a DIM or Slurm job's details, say)
//! to `GET /api/v2/executions/{id}`. Its world imports no `wasi:http`.
//!
//! # What an [`Execution`] carries
//!
//! `id`, `backend` (e.g. `dim`, `slurm`), `status` (the execution's state:
//! `pending`, `submitted`, `running`, `completed`, `failed`, `cancelled`) and
//! `attributes`, a list of `(key, value)` strings with these keys (a key is
//! absent when its value is; values are never empty):
//!
//! | key | value |
//! |---|---|
//! | `project_module` | the execution's project module |
//! | `source_id` | the source it processes |
//! | `scheduler.<name>` | each scheduler id: `scheduler.session_id` (a DIM session), `scheduler.job_id` (a Slurm job, plain or `<session_id>:<job_id>\|<session_dir>`) |
//! | `profile.<name>` | each key of the backend profile. DIM: `profile.manager_url`, `profile.host`, `profile.port` (decimal), `profile.https` (`true`/`false`). Slurm: `profile.login_node`, `profile.remote_user`, `profile.session_dir`, `profile.job_id` |
//! | `attr.<name>` | each free attribute (strings as they are, other JSON values as JSON text) |
//!
//! # What the host accepts back
//!
//! At most 64 fields; names of 1 to 64 bytes, a lower-case letter then
//! lower-case letters, digits or `_` (`dim_session_status_url`); values of
//! at most 4096 bytes without control characters; no name twice. A provider
//! breaking a rule, returning an error or trapping contributes no field and
//! gets a `debug_errors` entry in the answer instead. All providers of one
//! request share one time budget (`--debug-fields-budget`, 250 ms).

pub use crate::bindings::publisher::vigil::plugin::types::ExecutionRecord as Execution;
pub use crate::config::Config;
pub use crate::plugin::PluginInfo;

use crate::bindings::debug_fields as world;
use crate::bindings::publisher::vigil::plugin::types::DebugField;
use crate::plugin::{configure_slot, with_instance, InstanceSlot, NOT_CONFIGURED};

/// A plugin that adds fields to execution records of the backends it knows.
pub trait DebugFields: Sized + 'static {
    /// Builds the instance from its configuration; an error refuses to start.
    fn configure(config: &Config) -> Result<Self, String>;

    /// Backends this provider knows, e.g. `["slurm"]`.
    fn backends() -> Vec<String>;

    /// The extra `(name, value)` fields for one execution.
    fn fields(&mut self, execution: &Execution) -> Result<Vec<(String, String)>, String>;

    /// JSON Schema of the configuration object. Default: `{}` (anything).
    fn config_schema() -> String {
        "{}".to_string()
    }

    /// The plugin's self-description; `package` comes from Cargo metadata.
    fn info(package: PluginInfo) -> PluginInfo {
        package
    }
}

#[doc(hidden)]
pub fn __describe<T: DebugFields>(package: PluginInfo) -> world::PluginInfo {
    T::info(package)
        .into_wit(crate::bindings::publisher::vigil::plugin::types::PluginKind::DebugFields)
}

#[doc(hidden)]
pub fn __configure<T: DebugFields>(
    slot: &'static InstanceSlot<T>,
    entries: Vec<world::ConfigEntry>,
) -> Result<(), String> {
    let config = Config::from(entries);
    configure_slot(slot, || T::configure(&config))
}

#[doc(hidden)]
pub fn __fields<T: DebugFields>(
    slot: &'static InstanceSlot<T>,
    execution: world::ExecutionRecord,
) -> Result<Vec<DebugField>, String> {
    match with_instance(slot, |d| d.fields(&execution)) {
        Some(Ok(fields)) => Ok(fields
            .into_iter()
            .map(|(name, value)| DebugField { name, value })
            .collect()),
        Some(Err(e)) => Err(e),
        None => Err(NOT_CONFIGURED.to_string()),
    }
}

/// Exports a [`DebugFields`] implementation as the component's `debug-fields` world.
#[macro_export]
macro_rules! export_debug_fields {
    ($ty:ty) => {
        const _: () = {
            ::std::thread_local! {
                static VIGIL_INSTANCE: ::std::cell::RefCell<::std::option::Option<$ty>> =
                    const { ::std::cell::RefCell::new(::std::option::Option::None) };
            }
            struct VigilDebugFieldsExport;
            impl $crate::__private::debug_fields_world::Guest for VigilDebugFieldsExport {
                fn describe() -> $crate::__private::debug_fields_world::PluginInfo {
                    $crate::debug_fields::__describe::<$ty>($crate::__package_info!(
                        <$ty as $crate::debug_fields::DebugFields>::config_schema()
                    ))
                }
                fn configure(
                    config: ::std::vec::Vec<$crate::__private::debug_fields_world::ConfigEntry>,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::debug_fields::__configure::<$ty>(&VIGIL_INSTANCE, config)
                }
                fn backends() -> ::std::vec::Vec<::std::string::String> {
                    <$ty as $crate::debug_fields::DebugFields>::backends()
                }
                fn fields(
                    execution: $crate::__private::debug_fields_world::ExecutionRecord,
                ) -> ::std::result::Result<
                    ::std::vec::Vec<$crate::__private::debug_fields_world::DebugField>,
                    ::std::string::String,
                > {
                    $crate::debug_fields::__fields::<$ty>(&VIGIL_INSTANCE, execution)
                }
            }
            $crate::__private::debug_fields_world::__vigil_export_debug_fields_world!(
                VigilDebugFieldsExport with_types_in $crate::__private::debug_fields_world
            );
        };
    };
}
