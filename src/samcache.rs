//! `sam local invoke`'s layer cache, so a freshly published layer can be tried locally without a download.
//!
//! SAM CLI keeps each layer it downloaded under `~/.aws-sam/layers-pkg/<LayerName>-<Version>-<first 10 hex
//! of sha256(layer version ARN)>` and downloads again only when that folder is missing; the function's image
//! is tagged `<runtime image tag>-<first 25 hex of sha256(the layers' folder names joined by "-")>` and named
//! `samcli/lambda-<tag>`. These functions give the same names (SAM CLI's `LayerVersion._compute_layer_name`
//! and `LambdaImage._generate_docker_image_version`).

use sha2::{Digest, Sha256};

use crate::request::{Architecture, Runtime};

/// A layer version ARN that does not end in `:layer:NAME:VERSION`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a layer version ARN (arn:aws:lambda:REGION:ACCOUNT:layer:NAME:VERSION): {0:?}")]
pub struct InvalidLayerArn(pub String);

/// The cache folder name of one layer version: `<name>-<version>-<sha256(arn)[..10]>`.
pub fn layer_dir_name(layer_version_arn: &str) -> Result<String, InvalidLayerArn> {
    let invalid = || InvalidLayerArn(layer_version_arn.to_owned());
    let parts: Vec<&str> = layer_version_arn.split(':').collect();
    if parts.len() != 8 || parts[0] != "arn" || parts[2] != "lambda" || parts[5] != "layer" {
        return Err(invalid());
    }
    let (name, version) = (parts[6], parts[7]);
    if name.is_empty() || version.is_empty() || !version.chars().all(|c| c.is_ascii_digit()) {
        return Err(invalid());
    }
    Ok(format!(
        "{name}-{version}-{}",
        &sha256_hex(layer_version_arn)[..10]
    ))
}

/// SAM's runtime image tag for a Python runtime, e.g. `python:3.12-arm64`.
pub fn runtime_image_tag(runtime: Runtime, architecture: Architecture) -> String {
    format!("python:{}-{}", runtime.python_version(), architecture)
}

/// The tag of the image SAM builds for a function with these layers (folder names, in template order).
pub fn image_tag(runtime_image_tag: &str, layer_dir_names: &[String]) -> String {
    format!(
        "{runtime_image_tag}-{}",
        &sha256_hex(&layer_dir_names.join("-"))[..25]
    )
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_worked_example() {
        let first =
            layer_dir_name("arn:aws:lambda:us-west-2:111111111111:layer:myLayer:1").unwrap();
        let second =
            layer_dir_name("arn:aws:lambda:us-west-2:111111111111:layer:mySecondLayer:1").unwrap();
        assert_eq!(first, "myLayer-1-926eeb5ff1");
        assert_eq!(second, "mySecondLayer-1-6bc1022bdf");
        let tag = image_tag("python:3.12-arm64", &[first, second]);
        assert_eq!(tag, "python:3.12-arm64-2dd7ac5ffb30d515926aefffd");
    }

    #[test]
    fn runtime_tags_carry_the_architecture() {
        assert_eq!(
            runtime_image_tag(Runtime::Python312, Architecture::Arm64),
            "python:3.12-arm64"
        );
        assert_eq!(
            runtime_image_tag(Runtime::Python310, Architecture::X86_64),
            "python:3.10-x86_64"
        );
    }

    #[test]
    fn other_arns_are_refused() {
        for bad in [
            "arn:aws:lambda:us-west-2:111111111111:function:f",
            "arn:aws:lambda:us-west-2:111111111111:layer:myLayer",
            "arn:aws:lambda:us-west-2:111111111111:layer:myLayer:latest",
            "myLayer:1",
        ] {
            assert!(layer_dir_name(bad).is_err(), "{bad}");
        }
    }
}
