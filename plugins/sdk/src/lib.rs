//! The SDK for Vigil plugins: WebAssembly components written against the
//! `vigil:plugin` WIT package (`wit/plugin.wit`).
//!
//! A plugin is a struct and one `impl` of the trait of its kind, registered with
//! that kind's macro:
//!
//! | kind | trait | macro | world |
//! |---|---|---|---|
//! | publisher | [`publisher::Publisher`] | [`export_publisher!`] | `vigil:plugin/publisher` |
//! | notifier | [`notifier::Notifier`] | [`export_notifier!`] | `vigil:plugin/notifier` |
//! | debug-field provider | [`debug_fields::DebugFields`] | [`export_debug_fields!`] | `vigil:plugin/debug-fields` |
//!
//! The instance is created by the trait's `configure` from the manifest's
//! `[config]` table ([`Config`]) and kept inside the component between calls; a
//! call before a successful `configure` fails permanently. `describe` answers
//! with the crate's Cargo `name`, `version` and `description` unless the trait's
//! `info` says otherwise, and with `config_schema()` (default `{}`).
//!
//! Besides: [`http`] (outbound HTTP over `wasi:http`, allowed hosts only) and the
//! logging macros [`info!`], [`warn!`], [`error!`], [`debug!`], [`trace!`]
//! (`info!("sent {n} samples", url = self.url)`), which write through the host.
//!
//! # A publisher
//!
//! ```no_run
//! use vigil_plugin::publisher::{Batch, Config, Publisher, PublishError, PublishReport};
//! use vigil_plugin::http;
//!
//! struct Webhook { url: String }
//!
//! impl Publisher for Webhook {
//!     fn configure(config: &Config) -> Result<Self, String> {
//!         Ok(Webhook { url: config.require("url")? })
//!     }
//!     fn publish(&mut self, batch: &Batch) -> Result<PublishReport, PublishError> {
//!         let body: Vec<_> = batch.samples().map(|s| (s.name(), s.value())).collect();
//!         http::post(&self.url).json(&body).send()?.error_for_status()?;
//!         Ok(PublishReport::all_accepted())
//!     }
//! }
//!
//! vigil_plugin::export_publisher!(Webhook);
//! # fn main() {}
//! ```
//!
//! # Building
//!
//! The author crate is a `cdylib`; `cargo build --target wasm32-wasip2 --release`
//! (or `cargo component build --release`) produces the component. Panics trap
//! the instance (the host restarts it); the SDK logs the panic message through
//! the host first. The crate also compiles natively so plugins can unit-test
//! their logic (with [`publisher::BatchBuilder`]); there, `http` answers
//! [`http::HttpError::Unsupported`] and logs go to stderr.

mod batch;
mod bindings;
mod config;
mod delivery;
mod plugin;

pub mod debug_fields;
pub mod http;
pub mod log;
pub mod notifier;
pub mod publisher;

pub use config::Config;
pub use delivery::{DeliveryError, PublishReport, Receipt, Rejection};
pub use plugin::PluginInfo;

/// What the `export_*!` macros expand to; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings::debug_fields as debug_fields_world;
    pub use crate::bindings::notifier as notifier_world;
    pub use crate::bindings::publisher as publisher_world;
}

/// The author crate's Cargo metadata as a [`PluginInfo`] with `schema`; used
/// by the `export_*!` macros.
#[doc(hidden)]
#[macro_export]
macro_rules! __package_info {
    ($schema:expr) => {
        $crate::PluginInfo::from_package(
            ::std::env!("CARGO_PKG_NAME"),
            ::std::env!("CARGO_PKG_VERSION"),
            ::std::env!("CARGO_PKG_DESCRIPTION"),
            $schema,
        )
    };
}
