//! The environment the suite needs, read once per use, with a clear failure when it is missing.
//!
//! `scripts/test` installs the services and exports:
//!
//! | variable                     | what                                                     |
//! |------------------------------|----------------------------------------------------------|
//! | `PRESENCE_SERVER_BIN`        | the `presence-server` binary of this workspace           |
//! | `PRESENCE_TEST_REDIS_SERVER` | `redis-server` (Debian package `redis-server`)           |
//! | `PRESENCE_TEST_REDIS_CLI`    | `redis-cli` (Debian package `redis-tools`), for cluster creation |
//! | `PRESENCE_TEST_DYNALITE`     | dynalite's `cli.js` (npm, pinned in `tests/node`), run with `node` |
//!
//! A missing variable or file fails the test (never skips it).

use std::path::PathBuf;

/// How to get every variable: the one command that sets them all.
const HOW: &str = "run the suite with `scripts/test -p presence-tests` (it installs redis-server, \
                   redis-tools and dynalite, builds presence-server and exports the variables)";

/// The path in `var`, which must exist. Panics with what to install otherwise.
pub fn required_path(var: &str, what: &str) -> PathBuf {
    let Some(value) = std::env::var_os(var).filter(|v| !v.is_empty()) else {
        panic!("{var} is not set: this test needs {what}; {HOW}");
    };
    let path = PathBuf::from(value);
    assert!(path.exists(), "{var}={} does not exist: this test needs {what}; {HOW}", path.display());
    path
}

/// The `presence-server` binary.
pub fn server_bin() -> PathBuf {
    required_path("PRESENCE_SERVER_BIN", "the presence-server binary (cargo build -p presence-runtime)")
}

/// `redis-server`.
pub fn redis_server() -> PathBuf {
    required_path("PRESENCE_TEST_REDIS_SERVER", "redis-server (apt-get install redis-server)")
}

/// `redis-cli`.
pub fn redis_cli() -> PathBuf {
    required_path("PRESENCE_TEST_REDIS_CLI", "redis-cli (apt-get install redis-tools)")
}

/// dynalite's `cli.js`.
pub fn dynalite_cli() -> PathBuf {
    required_path("PRESENCE_TEST_DYNALITE", "dynalite (npm ci in tests/node)")
}

/// `node`, from `PATH`.
pub fn node() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|dir| dir.join("node")).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!("node is not on PATH: dynalite needs Node.js (apt-get install nodejs); {HOW}")
    })
}
