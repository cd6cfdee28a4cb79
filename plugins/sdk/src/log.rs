//! Structured logging through the host's `vigil:plugin/host.log` import, and
//! the panic hook that reports a panic there before the instance traps.
//!
//! The macros ([`info!`](crate::info) and friends) take a message (a format
//! string; inline `{captures}` work) followed by `key = value` fields, each
//! value formatted with `Display`. The host writes the line under the plugin's
//! name. Outside a component (native tests) lines go to stderr.

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that the plugin handled.
    Warn,
    /// A failure.
    Error,
}

/// Writes one log line with structured `fields`. The macros call this.
pub fn write(level: Level, message: &str, fields: &[(String, String)]) {
    #[cfg(target_arch = "wasm32")]
    {
        use crate::bindings::imports::vigil::plugin::host;
        let level = match level {
            Level::Trace => host::Level::Trace,
            Level::Debug => host::Level::Debug,
            Level::Info => host::Level::Info,
            Level::Warn => host::Level::Warn,
            Level::Error => host::Level::Error,
        };
        host::log(level, message, fields);
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        use std::io::Write;
        let mut line = format!("[{level:?}] {message}");
        for (k, v) in fields {
            line.push_str(&format!(" {k}={v:?}"));
        }
        line.push('\n');
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
}

/// Makes a panic log its message (at `error`) through the host before the
/// instance traps, so the host can say why. Installed by `configure`.
pub(crate) fn install_panic_hook() {
    #[cfg(target_arch = "wasm32")]
    {
        static HOOK: std::sync::Once = std::sync::Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                write(Level::Error, &format!("plugin {info}"), &[]);
                previous(info);
            }));
        });
    }
}

#[doc(hidden)]
#[macro_export]
macro_rules! __log {
    ($level:expr, $message:literal $(, $key:ident = $value:expr)* $(,)?) => {
        $crate::log::write(
            $level,
            &::std::format!($message),
            &[$((
                ::std::string::String::from(::std::stringify!($key)),
                ::std::string::ToString::to_string(&$value),
            )),*],
        )
    };
}

/// Logs at `trace`: `trace!("message {capture}", key = value, ...)`.
#[macro_export]
macro_rules! trace {
    ($($args:tt)+) => { $crate::__log!($crate::log::Level::Trace, $($args)+) };
}

/// Logs at `debug`: `debug!("message {capture}", key = value, ...)`.
#[macro_export]
macro_rules! debug {
    ($($args:tt)+) => { $crate::__log!($crate::log::Level::Debug, $($args)+) };
}

/// Logs at `info`: `info!("message {capture}", key = value, ...)`.
#[macro_export]
macro_rules! info {
    ($($args:tt)+) => { $crate::__log!($crate::log::Level::Info, $($args)+) };
}

/// Logs at `warn`: `warn!("message {capture}", key = value, ...)`.
#[macro_export]
macro_rules! warn {
    ($($args:tt)+) => { $crate::__log!($crate::log::Level::Warn, $($args)+) };
}

/// Logs at `error`: `error!("message {capture}", key = value, ...)`.
#[macro_export]
macro_rules! error {
    ($($args:tt)+) => { $crate::__log!($crate::log::Level::Error, $($args)+) };
}

#[cfg(test)]
mod tests {
    #[test]
    fn macros_accept_messages_captures_and_fields() {
        let n = 3;
        crate::info!("sent {n} samples");
        crate::warn!("slow receiver", elapsed_ms = 1200, url = "http://x");
        crate::error!("failed", reason = String::from("boom"),);
        crate::trace!("plain");
        crate::debug!("n", n = n);
    }
}
