//! `layer-builder`: the Batch job's container entry point. See `layer-builder --help` and
//! [`layerforge::builder`].

use std::process::ExitCode;

use clap::Parser;
use layerforge::builder::{self, cli::Args};

#[tokio::main]
async fn main() -> ExitCode {
    // Bad arguments exit here with 2 and the usage line; --help and --version with 0.
    let args = Args::parse();
    builder::init_tracing();
    builder::main(args).await
}
