//! Storage backends under test: a fresh SQLite data directory or a freshly
//! created PostgreSQL database per test, and the `backend_tests!` macro.

use crate::{skip_or_fail, DATABASE_URL_ENV};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------
// Backends and databases
// ---------------------------------------------------------------------------

/// A storage backend of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite in a temporary data directory.
    Sqlite,
    /// PostgreSQL; holds the admin URL from `VIGIL_TEST_DATABASE_URL`.
    Postgres(String),
}

impl Backend {
    /// The PostgreSQL backend when `VIGIL_TEST_DATABASE_URL` is set. Otherwise
    /// panics under `VIGIL_TEST_REQUIRE_SERVICES=1`, else prints a loud skip
    /// banner and returns `None`.
    pub fn postgres() -> Option<Backend> {
        match std::env::var(DATABASE_URL_ENV) {
            Ok(url) if !url.trim().is_empty() => Some(Backend::Postgres(url)),
            _ => {
                skip_or_fail(
                    "PostgreSQL: set VIGIL_TEST_DATABASE_URL (e.g. postgres://postgres@127.0.0.1:5432/test)",
                    "PostgreSQL required but VIGIL_TEST_DATABASE_URL unset",
                );
                None
            }
        }
    }

    /// Short name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }
}

/// Every backend available here: SQLite always, PostgreSQL when configured
/// (see [`Backend::postgres`]).
pub fn backends() -> Vec<Backend> {
    let mut v = vec![Backend::Sqlite];
    v.extend(Backend::postgres());
    v
}

/// Instantiates `async fn NAME(backend: Backend)` test bodies once per backend:
/// `sqlite::NAME` and `postgres::NAME`. The PostgreSQL variant skips loudly when
/// `VIGIL_TEST_DATABASE_URL` is unset (fails under `VIGIL_TEST_REQUIRE_SERVICES=1`).
///
/// ```text
/// async fn samples_round_trip(backend: Backend) { ... }
/// vigil_tests::backend_tests!(samples_round_trip);
/// ```
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(backend) = $crate::Backend::postgres() {
                        super::$name(backend).await
                    }
                }
            )*
        }
    };
}

/// A fresh, empty database for one test: a temporary data directory (always, so
/// the server never writes into the working directory) plus, for PostgreSQL, a
/// freshly created database `vigil_test_<uuid>`. Everything is removed on drop.
pub struct TestDatabase {
    backend: Backend,
    data_dir: PathBuf,
    pg: Option<PgDatabase>,
}

struct PgDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    /// Creates the database for `backend`.
    pub async fn new(backend: &Backend) -> TestDatabase {
        let data_dir =
            std::env::temp_dir().join(format!("vigil-test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&data_dir).expect("create data dir");
        let pg = match backend {
            Backend::Sqlite => None,
            Backend::Postgres(admin_url) => {
                use sqlx::Connection;
                let name = format!("vigil_test_{}", uuid::Uuid::new_v4().simple());
                let mut conn = sqlx::PgConnection::connect(admin_url)
                    .await
                    .unwrap_or_else(|e| panic!("connect to {DATABASE_URL_ENV}={admin_url}: {e}"));
                sqlx::query(&format!("CREATE DATABASE \"{name}\""))
                    .execute(&mut conn)
                    .await
                    .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
                let _ = conn.close().await;
                let url = with_database(admin_url, &name);
                Some(PgDatabase {
                    admin_url: admin_url.clone(),
                    name,
                    url,
                })
            }
        };
        TestDatabase {
            backend: backend.clone(),
            data_dir,
            pg,
        }
    }

    /// The backend of this database.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The server's `--data-dir`.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The PostgreSQL URL of the fresh database (None for SQLite).
    pub fn database_url(&self) -> Option<&str> {
        self.pg.as_ref().map(|p| p.url.as_str())
    }

    /// Command-line arguments that point a server at this database.
    pub fn server_args(&self) -> Vec<String> {
        let mut args = vec![
            "--data-dir".to_string(),
            self.data_dir.display().to_string(),
        ];
        if let Some(pg) = &self.pg {
            args.push("--database-url".into());
            args.push(pg.url.clone());
        }
        args
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some(pg) = self.pg.take() {
            // Drop may run inside an async test: do the async work on a thread of
            // its own with its own runtime.
            let handle = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                let Ok(rt) = rt else { return };
                rt.block_on(async move {
                    use sqlx::Connection;
                    match sqlx::PgConnection::connect(&pg.admin_url).await {
                        Ok(mut conn) => {
                            let sql =
                                format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", pg.name);
                            if let Err(e) = sqlx::query(&sql).execute(&mut conn).await {
                                eprintln!("[harness] could not drop {}: {e}", pg.name);
                            }
                            let _ = conn.close().await;
                        }
                        Err(e) => eprintln!("[harness] could not drop {}: {e}", pg.name),
                    }
                });
            });
            let _ = handle.join();
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// Replaces the database name (URL path) of a PostgreSQL URL.
pub fn with_database(url: &str, database: &str) -> String {
    let mut u = reqwest::Url::parse(url).unwrap_or_else(|e| panic!("bad database URL {url}: {e}"));
    u.set_path(&format!("/{database}"));
    u.to_string()
}

/// Replaces host and port of a PostgreSQL URL (used to route through a [`TcpProxy`]).
pub fn with_host_port(url: &str, addr: SocketAddr) -> String {
    let mut u = reqwest::Url::parse(url).unwrap_or_else(|e| panic!("bad database URL {url}: {e}"));
    u.set_host(Some(&addr.ip().to_string())).expect("set host");
    u.set_port(Some(addr.port())).expect("set port");
    u.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_are_rewritten() {
        let u = with_database(
            "postgres://postgres@127.0.0.1:5432/test?sslmode=disable",
            "vigil_x",
        );
        assert_eq!(
            u,
            "postgres://postgres@127.0.0.1:5432/vigil_x?sslmode=disable"
        );
        let u = with_host_port(&u, "127.0.0.1:6000".parse().expect("addr"));
        assert_eq!(
            u,
            "postgres://postgres@127.0.0.1:6000/vigil_x?sslmode=disable"
        );
    }
}
