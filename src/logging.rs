//! Log set-up shared by both binaries.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber (RUST_LOG overrides the default `info`).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Reports the error that stops a binary: one plain line on stderr (`<bin>: error: ...`, with
/// the cause chain) and, with JSON logs, an `error` event as well, so log collectors see why the
/// process stopped. Returns the exit code for a definite error (2).
pub fn fatal(bin: &str, format: LogFormat, e: &crate::Error) -> std::process::ExitCode {
    let msg = crate::error::chain(e);
    if format == LogFormat::Json {
        tracing::error!(error = %msg, "{bin} stopped");
    }
    eprintln!("{bin}: error: {msg}");
    std::process::ExitCode::from(2)
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutdown requested");
}
