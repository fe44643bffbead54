//! `layer-builder`: the Batch job's container entry point. See `layer-builder --help` and
//! [`layerforge::builder`].

use std::process::ExitCode;

use layerforge::builder::{self, cli};

#[tokio::main]
async fn main() -> ExitCode {
    // The benchmark's zip stage alone (scripts/bench.sh), kept out of --help: `--bench-zip-tree DIR OUT.zip`.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == "--bench-zip-tree") {
        return builder::bench_zip_tree(&argv[2..]);
    }
    // Bad arguments exit here with 2 and the usage line; --help and --version with 0.
    let args = cli::parse_or_exit();
    builder::init_tracing();
    builder::main(args).await
}
