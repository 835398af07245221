//! Logging: `tracing` to stderr, text or JSON (`LOG_FORMAT`), level from `RUST_LOG`.

use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogFormat;

/// A fresh id for one failure, shown to the client (an error answer, a callback's step, a
/// page) and logged with the cause, so an operator can find the one from the other.
pub fn correlation_id() -> String {
    crate::crypto::random_token(9)
}

/// Installs the global subscriber; a second call (tests) is a no-op.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,aws_config=warn,aws_smithy_runtime=warn,hyper=warn")
    });
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
