//! Publishers: the [`Publisher`] trait and [`export_publisher!`](crate::export_publisher).
//!
//! A publisher receives batches of samples and events read from the host's log
//! and delivers them to an external store, usually over [`crate::http`].

pub use crate::batch::{
    Batch, BatchBuilder, Event, Labels, MetricKind, Sample, SampleColumns, Samples,
};
pub use crate::config::Config;
pub use crate::delivery::{DeliveryError as PublishError, PublishReport, Rejection};
pub use crate::plugin::PluginInfo;

use crate::bindings::publisher as world;
use crate::plugin::{configure_slot, with_instance, InstanceSlot, NOT_CONFIGURED};

/// A plugin that delivers batches to an external store.
pub trait Publisher: Sized + 'static {
    /// Builds the instance from its configuration; an error refuses to start.
    fn configure(config: &Config) -> Result<Self, String>;

    /// Delivers one batch. Rejections in the report go to the dead letters;
    /// an error fails the whole delivery (retryable or permanent).
    fn publish(&mut self, batch: &Batch) -> Result<PublishReport, PublishError>;

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
pub fn __describe<T: Publisher>(package: PluginInfo) -> world::PluginInfo {
    T::info(package).into_wit(world::vigil::plugin::types::PluginKind::Publisher)
}

#[doc(hidden)]
pub fn __configure<T: Publisher>(
    slot: &'static InstanceSlot<T>,
    entries: Vec<world::ConfigEntry>,
) -> Result<(), String> {
    let config = Config::from(entries);
    configure_slot(slot, || T::configure(&config))
}

#[doc(hidden)]
pub fn __publish<T: Publisher>(
    slot: &'static InstanceSlot<T>,
    batch: world::Batch,
) -> Result<world::PublishReport, world::DeliveryError> {
    let batch = Batch::from(batch);
    match with_instance(slot, |p| p.publish(&batch)) {
        Some(Ok(report)) => Ok(report.into()),
        Some(Err(e)) => Err(e.into()),
        None => Err(PublishError::permanent(NOT_CONFIGURED).into()),
    }
}

/// Exports a [`Publisher`] implementation as the component's `publisher` world.
///
/// Use once per crate: `vigil_plugin::export_publisher!(MyPublisher);`
#[macro_export]
macro_rules! export_publisher {
    ($ty:ty) => {
        const _: () = {
            ::std::thread_local! {
                static VIGIL_INSTANCE: ::std::cell::RefCell<::std::option::Option<$ty>> =
                    const { ::std::cell::RefCell::new(::std::option::Option::None) };
            }
            struct VigilPublisherExport;
            impl $crate::__private::publisher_world::Guest for VigilPublisherExport {
                fn describe() -> $crate::__private::publisher_world::PluginInfo {
                    $crate::publisher::__describe::<$ty>($crate::__package_info!(
                        <$ty as $crate::publisher::Publisher>::config_schema()
                    ))
                }
                fn configure(
                    config: ::std::vec::Vec<$crate::__private::publisher_world::ConfigEntry>,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::publisher::__configure::<$ty>(&VIGIL_INSTANCE, config)
                }
                fn publish(
                    batch: $crate::__private::publisher_world::Batch,
                ) -> ::std::result::Result<
                    $crate::__private::publisher_world::PublishReport,
                    $crate::__private::publisher_world::DeliveryError,
                > {
                    $crate::publisher::__publish::<$ty>(&VIGIL_INSTANCE, batch)
                }
            }
            $crate::__private::publisher_world::__vigil_export_publisher_world!(
                VigilPublisherExport with_types_in $crate::__private::publisher_world
            );
        };
    };
}
