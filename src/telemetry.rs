//! Logging set-up, callable once per process.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber (`text` or `json` to stderr). A second call is a no-op.
pub fn init(format: &str, level: &str) {
    let filter = EnvFilter::try_from_env("PRORATA_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
