//! `layer-builder`: the Batch job's container entry point. See `layer-builder --help` and
//! [`layerforge::builder`].

use std::process::ExitCode;

use layerforge::builder::{self, cli};

#[tokio::main]
async fn main() -> ExitCode {
    // Bad arguments exit here with 2 and the usage line; --help and --version with 0.
    let args = cli::parse_or_exit();
    builder::init_tracing();
    builder::main(args).await
}
