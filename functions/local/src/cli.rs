//! The command line of `local`. Everything is configured by environment (README,
//! Configuration), so the only arguments are `--help` and `--version` (both print and exit)
//! and `audit verify [--since T] [--until T]` (checks the audit trail of the configured
//! store, prints the report as JSON, exits 1 when it names a problem); anything else is
//! refused rather than ignored (a `--port 9000` that silently served on 8787 would mislead).

/// What the command line asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// No arguments: start the gateway.
    Serve,
    /// `--help` / `-h`: print [`HELP`].
    Help,
    /// `--version` / `-V`: print [`version`].
    Version,
    /// `audit verify [--since T] [--until T]`: times as RFC 3339 or ms since the epoch.
    AuditVerify {
        since: Option<i64>,
        until: Option<i64>,
    },
}

/// An argument `local` does not take.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown argument '{0}': local is configured by environment variables (see --help)")]
pub struct UnknownArgument(pub String);

/// Reads the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, UnknownArgument> {
    let mut args = args.into_iter().peekable();
    if args.peek().is_some_and(|a| a == "audit") {
        args.next();
        return parse_audit(args);
    }
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

/// `audit verify [--since T] [--until T]` after `audit`.
fn parse_audit(mut args: impl Iterator<Item = String>) -> Result<Command, UnknownArgument> {
    match args.next() {
        Some(v) if v == "verify" => {}
        Some(other) => return Err(UnknownArgument(other)),
        None => return Err(UnknownArgument("audit".into())),
    }
    let (mut since, mut until) = (None, None);
    while let Some(flag) = args.next() {
        let slot = match flag.as_str() {
            "--since" => &mut since,
            "--until" => &mut until,
            _ => return Err(UnknownArgument(flag)),
        };
        let value = args.next().ok_or_else(|| UnknownArgument(flag.clone()))?;
        *slot = Some(
            mcpgw::audit::range::parse_time_ms(&value)
                .ok_or_else(|| UnknownArgument(format!("{flag} {value}")))?,
        );
    }
    Ok(Command::AuditVerify { since, until })
}

/// `local <version>`.
pub fn version() -> String {
    format!("local {}", env!("CARGO_PKG_VERSION"))
}

/// The `--help` text: what the binary does and the settings a first run needs.
pub const HELP: &str = "\
local: the whole MCP gateway in one process (every route on one port, SQLite store)

Usage: local [--help | --version]        (from a clone: cargo run -p local)
       local audit verify [--since T] [--until T]
                 check the audit trail's hash chains and seals in the configured store
                 (T: RFC 3339 or ms since the epoch; default: the last day; 31 days at most);
                 prints a JSON report, exits 1 when it names a problem

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
  MCPGW_AUDIT_RETENTION_DAYS how long audit records are kept       [90]
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
        for bad in [
            &["audit"][..],
            &["audit", "delete"],
            &["audit", "verify", "--since"],
            &["audit", "verify", "--since", "yesterday"],
            &["audit", "verify", "--tail", "5"],
        ] {
            assert!(parse(args(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn audit_verify_takes_a_time_range() {
        assert_eq!(
            parse(args(&["audit", "verify"])),
            Ok(Command::AuditVerify {
                since: None,
                until: None
            })
        );
        assert_eq!(
            parse(args(&[
                "audit",
                "verify",
                "--since",
                "1970-01-01T00:00:01Z",
                "--until",
                "5000"
            ])),
            Ok(Command::AuditVerify {
                since: Some(1000),
                until: Some(5000)
            })
        );
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
