//! `cargo run -p local`: the whole gateway on 127.0.0.1:8787 (see `MCPGW_*` in the README,
//! or `local --help`).

use local::cli::{self, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let verify = match cli::parse(std::env::args().skip(1)) {
        Ok(Command::Serve) => None,
        Ok(Command::AuditVerify { since, until }) => Some((since, until)),
        Ok(Command::Help) => {
            print!("{}", cli::HELP);
            return Ok(());
        }
        Ok(Command::Version) => {
            println!("{}", cli::version());
            return Ok(());
        }
        Err(e) => {
            eprintln!("{e}");
            // 2: the usual exit status of a command-line usage error.
            std::process::exit(2);
        }
    };
    let config = mcpgw::config::Config::from_env()?;
    mcpgw::telemetry::init(false);
    if let Some((since, until)) = verify {
        let ok = local::audit_verify(config, since, until).await?;
        std::process::exit(if ok { 0 } else { 1 });
    }
    local::run(config).await
}
