//! Logging setup: JSON lines in Lambda (CloudWatch parses them), readable text locally.
//! `RUST_LOG` filters (default `info`).

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; call once at the top of `main`.
pub fn init(in_lambda: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if in_lambda {
        // Lambda adds its own timestamp and request id to each line.
        builder
            .json()
            .without_time()
            .with_current_span(false)
            .with_target(false)
            .init();
    } else {
        // Colors only on a terminal: piped output (files, CI logs, tests) stays plain text.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
        builder.with_target(false).with_ansi(ansi).init();
    }
}
