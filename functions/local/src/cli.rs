//! The command line of `local`. Everything is configured by environment (README,
//! Configuration), so the only arguments are `--help` and `--version`: both print and exit,
//! and anything else is refused rather than ignored (a `--port 9000` that silently served on
//! 8787 would mislead).

/// What the command line asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// No arguments: start the gateway.
    Serve,
    /// `--help` / `-h`: print [`HELP`].
    Help,
    /// `--version` / `-V`: print [`version`].
    Version,
}

/// An argument `local` does not take.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown argument '{0}': local is configured by environment variables (see --help)")]
pub struct UnknownArgument(pub String);

/// Reads the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, UnknownArgument> {
    let mut command = Command::Serve;
    for arg in args {
        command = match arg.as_str() {
            "--help" | "-h" => Command::Help,
            "--version" | "-V" => Command::Version,
            _ => return Err(UnknownArgument(arg)),
        };
    }
    Ok(command)
}

/// `local <version>`.
pub fn version() -> String {
    format!("local {}", env!("CARGO_PKG_VERSION"))
}

/// The `--help` text: what the binary does and the settings a first run needs.
pub const HELP: &str = "\
local: the whole MCP gateway in one process (every route on one port, SQLite store)

Usage: local [--help | --version]        (from a clone: cargo run -p local)

Configured by environment variables (all optional; README, Configuration, lists them all):
  MCPGW_LISTEN               address to bind                       [127.0.0.1:8787]
  MCPGW_DATA_DIR             folder for the SQLite file and keyring  [./.mcp-gateway]
  MCPGW_PUBLIC_URL           base URL clients use                  [http://MCPGW_LISTEN]
  MCPGW_BOOTSTRAP_ADMIN_KEY  an admin API key with exactly this value
                             [unset: one is generated on first start and printed once]
  MCPGW_ADMIN_EMAILS         comma-separated emails holding the admin role
  MCPGW_SECRET_<NAME>        local value of the secret reference secret://<name>
  MCPGW_METRICS_LISTEN       also serve GET /metrics, unauthenticated, on this address
                             [unset: /metrics on MCPGW_LISTEN, admin key required]
  OTEL_EXPORTER_OTLP_ENDPOINT  export spans over OTLP/HTTP JSON to this collector
  RUST_LOG                   log filter                            [info]

Open http://127.0.0.1:8787/ for the web console; the admin API is under /admin.
";

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn no_arguments_serve_and_the_flags_print() {
        assert_eq!(parse(args(&[])), Ok(Command::Serve));
        for (flags, want) in [
            (&["--help"][..], Command::Help),
            (&["-h"], Command::Help),
            (&["--version"], Command::Version),
            (&["-V"], Command::Version),
        ] {
            assert_eq!(parse(args(flags)), Ok(want), "{flags:?}");
        }
    }

    #[test]
    fn anything_else_is_refused_by_name() {
        let e = parse(args(&["--port", "9000"])).unwrap_err();
        assert_eq!(e, UnknownArgument("--port".into()));
        assert!(e.to_string().contains("'--port'"), "{e}");
        assert!(parse(args(&["serve"])).is_err());
    }

    #[test]
    fn help_names_the_settings_of_a_first_run() {
        for var in [
            "MCPGW_LISTEN",
            "MCPGW_DATA_DIR",
            "MCPGW_BOOTSTRAP_ADMIN_KEY",
        ] {
            assert!(HELP.contains(var), "{var}");
        }
        assert!(version().ends_with(env!("CARGO_PKG_VERSION")));
    }
}
