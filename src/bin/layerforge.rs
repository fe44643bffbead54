//! `layerforge`: the user's command line (see `layerforge::cli`).

use std::process::ExitCode;

use clap::Parser;
use layerforge::cli::{self, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli::run(cli).await {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("layerforge: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
