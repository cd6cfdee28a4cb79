//! `sqlx::migrate!` embeds `../migrations` when `vigil-host` compiles, and
//! Cargo recompiles a crate only when a file it was built from changes: a new
//! migration is a new file, so without this an incremental build (and the
//! test suite) would keep migrating to the schema of the previous build.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
