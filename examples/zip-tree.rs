//! Zips an installed tree with the builder's own zip stage (collect + deterministic parallel deflate), for the
//! benchmark (scripts/bench.sh): the same work as layer-builder's `zip_seconds`, on a tree anyone can make.
//!
//! ```text
//! cargo run --release --example zip-tree -- DIR OUT.zip
//! ```
//! `DIR` holds the layer's top folder `python/`; entries are named `python/…`, as `zip -r OUT.zip python` run in
//! `DIR` names them (bytecode left out, as the builder does). Prints one line:
//! `seconds=… bytes=… entries=… sha256=…`.

use std::{path::PathBuf, process::ExitCode, time::Instant};

use layerforge::builder::{archive::write_zip, collect};

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [dir, out] = args.as_slice() else {
        eprintln!("usage: zip-tree DIR OUT.zip");
        return ExitCode::from(2);
    };
    let start = Instant::now();
    let result = collect(&dir.join("python"), "python")
        .and_then(|collected| write_zip(&collected.files, out));
    match result {
        Ok(summary) => {
            println!(
                "seconds={:.3} bytes={} entries={} sha256={}",
                start.elapsed().as_secs_f64(),
                summary.zipped_bytes,
                summary.entries,
                hex::encode(summary.sha256)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("zip-tree: {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}
