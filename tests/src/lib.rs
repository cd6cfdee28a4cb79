//! Integration test harness for Vigil.
//!
//! The tests in `tests/tests/*.rs` never link against the server: they build the
//! real `vigil` binary once per test process ([`vigil_binary`]), start it as a child
//! process on ephemeral ports ([`TestServer`]) against a fresh database
//! ([`TestDatabase`]: a temporary SQLite data directory or a freshly created
//! PostgreSQL database) and talk to it over HTTP, exactly as a user would.
//!
//! Environment:
//! - `VIGIL_TEST_DATABASE_URL`: admin URL of a PostgreSQL server
//!   (e.g. `postgres://postgres@127.0.0.1:5432/test`). Each test creates its own
//!   database `vigil_test_<uuid>` there and drops it afterwards. When unset, the
//!   PostgreSQL variants of the tests are skipped with a loud banner.
//! - `VIGIL_TEST_REQUIRE_SERVICES=1`: turn every such skip (PostgreSQL, `promtool`,
//!   the Python OpenMetrics parser) into a failure. CI sets it.
//!
//! Most tests are written once as `async fn name(backend: Backend)` and
//! instantiated for both backends with [`backend_tests!`].

use std::io::Write;
use std::sync::Mutex;

mod alertmanager;
mod database;
mod exposition;
pub mod noetl;
mod plugin_dir;
pub mod plugins;
mod prometheus;
mod proxy;
pub mod receivers;
pub mod remote_write;
mod reports;
mod server;
mod sse;

pub use alertmanager::AlertmanagerServer;
pub use database::*;
pub use exposition::*;
pub use plugin_dir::*;
pub use prometheus::{PrometheusOptions, PrometheusServer};
pub use proxy::*;
pub use receivers::elasticsearch::{ElasticsearchReceiver, StoredDoc};
pub use receivers::loki::LokiReceiver;
pub use receivers::slack::SlackAnswer;
pub use receivers::webhook::{ReceivedRequest, Reply, WebhookReceiver};
pub use reports::*;
pub use server::*;
pub use sse::*;

pub use reqwest;
pub use serde_json::{json, Value};

/// Environment variable holding the PostgreSQL admin URL.
pub const DATABASE_URL_ENV: &str = "VIGIL_TEST_DATABASE_URL";
/// Environment variable that turns skips of missing services/tools into failures.
pub const REQUIRE_SERVICES_ENV: &str = "VIGIL_TEST_REQUIRE_SERVICES";

/// Environment variable naming the Python interpreter of the test virtualenv
/// (`.ci/run` creates it from `tests/python/requirements.txt`).
pub const PYTHON_ENV: &str = "VIGIL_TEST_PYTHON";

/// The Python interpreter tests run: `$VIGIL_TEST_PYTHON`, else `python3`.
pub fn python() -> String {
    std::env::var(PYTHON_ENV).unwrap_or_else(|_| "python3".to_string())
}

/// True when `VIGIL_TEST_REQUIRE_SERVICES=1`: missing services and tools fail the test.
pub fn services_required() -> bool {
    std::env::var(REQUIRE_SERVICES_ENV)
        .map(|v| v == "1" || v == "true")
        .unwrap_or(false)
}

/// Skips loudly (stderr banner) or, under `VIGIL_TEST_REQUIRE_SERVICES=1`, panics.
pub fn skip_or_fail(what: &str, required_msg: &str) {
    if services_required() {
        panic!("{required_msg}");
    }
    // Written to the stderr handle directly: libtest captures eprintln! of
    // passing tests, and a skip must be seen.
    static BANNERS: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let first = {
        let mut seen = BANNERS.lock().unwrap_or_else(|e| e.into_inner());
        let first = !seen.iter().any(|w| w == what);
        if first {
            seen.push(what.to_string());
        }
        first
    };
    let msg = if first {
        format!(
            "\n\
             ********************************************************************\n\
             *** SKIPPING {what}\n\
             *** ({REQUIRE_SERVICES_ENV}=1 turns this skip into a failure)\n\
             ********************************************************************\n"
        )
    } else {
        format!("*** SKIPPING {what}\n")
    };
    let _ = std::io::stderr().write_all(msg.as_bytes());
}
