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

/// `pairs` (labels or annotations) as a JSON object of strings, as
/// Alertmanager's payloads write them.
pub fn pairs_object(pairs: &[(String, String)]) -> serde_json::Value {
    serde_json::Value::Object(
        pairs
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect(),
    )
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

/// A time in milliseconds since the Unix epoch as RFC 3339 in UTC, written
/// the way Go (and so Alertmanager) writes it: fraction without trailing
/// zeros, none when whole (`2026-12-02T03:04:05.12Z`, `…:05Z`).
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut out = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    if millis != 0 {
        let fraction = format!("{millis:03}");
        out.push('.');
        out.push_str(fraction.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Go's zero time as Alertmanager writes it: the `endsAt` of a firing alert.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_as_go_writes_them() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_796_180_645_120), "2026-12-02T03:04:05.12Z");
        assert_eq!(rfc3339(951_782_400_001), "2000-02-29T00:00:00.001Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn pairs_are_looked_up_by_name() {
        let pairs = vec![("a".to_string(), "1".to_string())];
        assert_eq!(get(&pairs, "a"), Some("1"));
        assert_eq!(get(&pairs, "b"), None);
        assert_eq!(status_str(AlertStatus::Resolved), "resolved");
    }
}
