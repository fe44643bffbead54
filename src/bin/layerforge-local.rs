//! `layerforge-local`: small helpers for running layerforge on one machine (used by `scripts/run-local.sh`).
//!
//! `layerforge-local sam-names --arn ARN --runtime python3.12 --architecture arm64` prints, as JSON, the
//! folder `sam local invoke` looks for under its layer cache and the image tag it builds for a function using
//! that layer (see `layerforge::samcache`).

use std::process::ExitCode;

use layerforge::{
    request::{Architecture, Runtime},
    samcache,
};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("layerforge-local: {message}");
            eprintln!(
                "usage: layerforge-local sam-names --arn LAYER_VERSION_ARN --runtime RUNTIME --architecture ARCH"
            );
            ExitCode::from(2)
        }
    }
}

fn run(args: &[String]) -> Result<String, String> {
    let (command, rest) = args.split_first().ok_or("missing command")?;
    if command != "sam-names" {
        return Err(format!("unknown command {command:?}"));
    }
    let value = |flag: &str| -> Result<&str, String> {
        rest.iter()
            .position(|a| a == flag)
            .and_then(|i| rest.get(i + 1))
            .map(String::as_str)
            .ok_or_else(|| format!("{flag} is required"))
    };
    let arn = value("--arn")?;
    let runtime: Runtime = value("--runtime")?.parse()?;
    let architecture: Architecture = value("--architecture")?.parse()?;
    let dir = samcache::layer_dir_name(arn).map_err(|e| e.to_string())?;
    let tag = samcache::image_tag(
        &samcache::runtime_image_tag(runtime, architecture),
        std::slice::from_ref(&dir),
    );
    Ok(serde_json::json!({
        "layer_dir": dir,
        "image_tag": tag,
        "image": format!("samcli/lambda-{tag}"),
    })
    .to_string())
}
