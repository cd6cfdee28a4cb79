//! Notifiers: the [`Notifier`] trait and [`export_notifier!`](crate::export_notifier).
//!
//! A notifier delivers a [`Notification`] to a channel (a webhook, Slack,
//! PagerDuty, …): a group of [`Alert`]s as Alertmanager sends them, firing
//! while any alert of it fires. Labels and annotations are `(name, value)`
//! pairs sorted by name; [`get`] looks one up.

pub use crate::bindings::publisher::vigil::plugin::types::{Alert, AlertStatus, Notification};
pub use crate::config::Config;
pub use crate::delivery::{DeliveryError as NotifyError, Receipt};
pub use crate::plugin::PluginInfo;

use crate::bindings::notifier as world;
use crate::plugin::{configure_slot, with_instance, InstanceSlot, NOT_CONFIGURED};

/// A plugin that delivers alert notifications to a channel.
pub trait Notifier: Sized + 'static {
    /// Builds the instance from its configuration; an error refuses to start.
    fn configure(config: &Config) -> Result<Self, String>;

    /// Delivers one notification (a group of alerts).
    fn notify(&mut self, notification: &Notification) -> Result<Receipt, NotifyError>;

    /// JSON Schema of the configuration object. Default: `{}` (anything).
    fn config_schema() -> String {
        "{}".to_string()
    }

    /// The plugin's self-description; `package` comes from Cargo metadata.
    fn info(package: PluginInfo) -> PluginInfo {
        package
    }
}

/// The value of `name` among `pairs` (labels or annotations).
pub fn get<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `"firing"` or `"resolved"`, as Alertmanager writes them.
pub fn status_str(status: AlertStatus) -> &'static str {
    match status {
        AlertStatus::Firing => "firing",
        AlertStatus::Resolved => "resolved",
    }
}

#[doc(hidden)]
pub fn __describe<T: Notifier>(package: PluginInfo) -> world::PluginInfo {
    T::info(package)
        .into_wit(crate::bindings::publisher::vigil::plugin::types::PluginKind::Notifier)
}

#[doc(hidden)]
pub fn __configure<T: Notifier>(
    slot: &'static InstanceSlot<T>,
    entries: Vec<world::ConfigEntry>,
) -> Result<(), String> {
    let config = Config::from(entries);
    configure_slot(slot, || T::configure(&config))
}

#[doc(hidden)]
pub fn __notify<T: Notifier>(
    slot: &'static InstanceSlot<T>,
    notification: world::Notification,
) -> Result<world::Receipt, world::DeliveryError> {
    match with_instance(slot, |n| n.notify(&notification)) {
        Some(Ok(receipt)) => Ok(receipt.into()),
        Some(Err(e)) => Err(e.into()),
        None => Err(NotifyError::permanent(NOT_CONFIGURED).into()),
    }
}

/// Exports a [`Notifier`] implementation as the component's `notifier` world.
#[macro_export]
macro_rules! export_notifier {
    ($ty:ty) => {
        const _: () = {
            ::std::thread_local! {
                static VIGIL_INSTANCE: ::std::cell::RefCell<::std::option::Option<$ty>> =
                    const { ::std::cell::RefCell::new(::std::option::Option::None) };
            }
            struct VigilNotifierExport;
            impl $crate::__private::notifier_world::Guest for VigilNotifierExport {
                fn describe() -> $crate::__private::notifier_world::PluginInfo {
                    $crate::notifier::__describe::<$ty>($crate::__package_info!(
                        <$ty as $crate::notifier::Notifier>::config_schema()
                    ))
                }
                fn configure(
                    config: ::std::vec::Vec<$crate::__private::notifier_world::ConfigEntry>,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::notifier::__configure::<$ty>(&VIGIL_INSTANCE, config)
                }
                fn notify(
                    notification: $crate::__private::notifier_world::Notification,
                ) -> ::std::result::Result<
                    $crate::__private::notifier_world::Receipt,
                    $crate::__private::notifier_world::DeliveryError,
                > {
                    $crate::notifier::__notify::<$ty>(&VIGIL_INSTANCE, notification)
                }
            }
            $crate::__private::notifier_world::__vigil_export_notifier_world!(
                VigilNotifierExport with_types_in $crate::__private::notifier_world
            );
        };
    };
}
