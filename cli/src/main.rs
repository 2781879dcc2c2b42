//! The `punnet` binary: parses the command line and hands it to `punnet_cli::run`.

use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = punnet_cli::Cli::parse();
    if let Err(e) = punnet_cli::run(cli).await {
        if let Some(line) = e.report() {
            eprintln!("{line}");
        }
        std::process::exit(1);
    }
}
