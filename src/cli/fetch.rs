//! `layerforge fetch ARN`: a layer version's content, downloaded, checked against its CodeSha256 and unpacked
//! safely (entries must stay inside the target folder; no links), optionally into SAM CLI's layer cache.
//!
//! The layer version comes from GetLayerVersionByArn, or GetLayerVersion with the name and version parsed from
//! the ARN (moto lacks the former). Its content is `Content.Location`, a presigned HTTPS URL. moto answers
//! `s3://` there; in the local cloud the zip is then the artifact publish-layer tagged with the ARN, and the
//! CodeSha256 moto computed from it when publishing is what it is checked against.

use std::{
    io::Cursor,
    path::{Path, PathBuf},
};

use base64::Engine;
use clap::Args;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::context::{Context, Target, print_json};
use super::error::CliError;
use crate::{
    aws::error_chain,
    request::{Architecture, Runtime},
    samcache,
    submit::LAYER_VERSION_ARN_TAG,
};

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// arn:aws:lambda:REGION:ACCOUNT:layer:NAME:VERSION
    #[arg(value_name = "LAYER_VERSION_ARN")]
    pub arn: String,
    /// Unpack into this folder (default: ./NAME-VERSION).
    #[arg(long, value_name = "DIR", conflicts_with = "sam_cache")]
    pub into: Option<PathBuf>,
    /// Unpack into SAM CLI's layer cache (~/.aws-sam/layers-pkg, or LAYERFORGE_SAM_CACHE), where
    /// `sam local invoke` finds it without downloading.
    #[arg(long)]
    pub sam_cache: bool,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// A layer version: what the fetch needs of GetLayerVersion(ByArn).
struct LayerVersion {
    location: String,
    code_sha256: String,
    runtime: Option<Runtime>,
    architecture: Option<Architecture>,
}

/// (name, version) of a layer version ARN.
pub fn parse_arn(arn: &str) -> Result<(String, i64), CliError> {
    samcache::layer_dir_name(arn)
        .map_err(|e| CliError::Invalid(format!("LAYER_VERSION_ARN: {e}")))?;
    let mut parts = arn.rsplitn(3, ':');
    let version = parts.next().and_then(|v| v.parse().ok());
    let name = parts.next();
    match (name, version) {
        (Some(n), Some(v)) => Ok((n.to_owned(), v)),
        _ => Err(CliError::Invalid(format!(
            "LAYER_VERSION_ARN: not a layer version ARN: {arn:?}"
        ))),
    }
}

/// SAM CLI's layer cache root.
pub fn sam_cache_root() -> Result<PathBuf, CliError> {
    if let Some(dir) = std::env::var_os("LAYERFORGE_SAM_CACHE").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(|home| PathBuf::from(home).join(".aws-sam/layers-pkg"))
        .ok_or_else(|| CliError::Aws("HOME is not set: pass LAYERFORGE_SAM_CACHE".into()))
}

pub async fn run(target: &Target, args: FetchArgs) -> Result<u8, CliError> {
    let (name, version) = parse_arn(&args.arn)?;
    let ctx = Context::new(target).await?;
    let layer = layer_version(&ctx, &args.arn, &name, version).await?;
    let zip = content(&ctx, &layer, &args.arn, &name).await?;
    let sha = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&zip));
    if sha != layer.code_sha256 {
        return Err(CliError::Aws(format!(
            "{}: the downloaded content's sha256 is {sha}, Lambda's CodeSha256 is {}: not unpacked",
            args.arn, layer.code_sha256
        )));
    }
    let dir_name = samcache::layer_dir_name(&args.arn)
        .map_err(|e| CliError::Invalid(format!("LAYER_VERSION_ARN: {e}")))?;
    let into = match (&args.into, args.sam_cache) {
        (Some(dir), _) => dir.clone(),
        (None, true) => sam_cache_root()?.join(&dir_name),
        (None, false) => PathBuf::from(format!("{name}-{version}")),
    };
    let files = unpack(&zip, &into)?;
    let image = match (args.sam_cache, layer.runtime) {
        (true, Some(runtime)) => {
            let arch = layer.architecture.unwrap_or(Architecture::X86_64);
            let tag = samcache::image_tag(&samcache::runtime_image_tag(runtime, arch), &[dir_name]);
            Some(format!("samcli/lambda-{tag}"))
        }
        _ => None,
    };
    if args.json {
        print_json(&json!({
            "layer_version_arn": args.arn,
            "code_sha256": layer.code_sha256,
            "code_size": zip.len(),
            "directory": into,
            "files": files,
            "sam_image": image,
        }));
    } else {
        eprintln!(
            "{}: {} bytes, CodeSha256 {} verified, {files} files",
            args.arn,
            zip.len(),
            layer.code_sha256
        );
        println!("{}", into.display());
        if let Some(image) = image {
            eprintln!(
                "sam local invoke, for a function on {} with only this layer, uses the image:",
                layer.runtime.map(|r| r.as_str()).unwrap_or("?")
            );
            println!("{image}");
        }
    }
    Ok(0)
}

async fn layer_version(
    ctx: &Context,
    arn: &str,
    name: &str,
    version: i64,
) -> Result<LayerVersion, CliError> {
    let lambda = aws_sdk_lambda::Client::new(&ctx.sdk);
    let parts = match lambda.get_layer_version_by_arn().arn(arn).send().await {
        Ok(out) => (
            out.content,
            out.compatible_runtimes,
            out.compatible_architectures,
        ),
        Err(by_arn) => {
            // moto answers GetLayerVersionByArn with an error (not implemented); GetLayerVersion is the same
            // call by name and version.
            let out = lambda
                .get_layer_version()
                .layer_name(name)
                .version_number(version)
                .send()
                .await
                .map_err(|e| {
                    CliError::Aws(format!(
                        "{arn}: GetLayerVersionByArn: {}; GetLayerVersion: {}",
                        error_chain(&by_arn),
                        error_chain(&e)
                    ))
                })?;
            (
                out.content,
                out.compatible_runtimes,
                out.compatible_architectures,
            )
        }
    };
    let (content, runtimes, architectures) = parts;
    let content =
        content.ok_or_else(|| CliError::Aws(format!("{arn}: the layer version has no Content")))?;
    Ok(LayerVersion {
        location: content.location.unwrap_or_default(),
        code_sha256: content.code_sha256.unwrap_or_default(),
        runtime: runtimes
            .unwrap_or_default()
            .first()
            .and_then(|r| r.as_str().parse().ok()),
        architecture: architectures
            .unwrap_or_default()
            .first()
            .and_then(|a| a.as_str().parse().ok()),
    })
}

async fn content(
    ctx: &Context,
    layer: &LayerVersion,
    arn: &str,
    name: &str,
) -> Result<Vec<u8>, CliError> {
    if layer.location.starts_with("https://") || layer.location.starts_with("http://") {
        return download(&layer.location).await;
    }
    let Some(state) = &ctx.local else {
        return Err(CliError::Aws(format!(
            "{arn}: Content.Location is {:?}, not a URL",
            layer.location
        )));
    };
    // The local cloud (moto): the artifact publish-layer tagged with this ARN.
    let s3 = crate::aws::s3_client(&ctx.sdk);
    let bucket = &state.stack.bucket;
    let prefix = format!("{}/{name}/", state.stack.prefix);
    let listed = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(&prefix)
        .send()
        .await
        .map_err(s3_error("ListObjectsV2", bucket, &prefix))?;
    for object in listed.contents() {
        let Some(key) = object.key().filter(|k| k.ends_with(".zip")) else {
            continue;
        };
        let tags = s3
            .get_object_tagging()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(s3_error("GetObjectTagging", bucket, key))?;
        if tags
            .tag_set()
            .iter()
            .any(|t| t.key() == LAYER_VERSION_ARN_TAG && t.value() == arn)
        {
            let out = s3
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .map_err(s3_error("GetObject", bucket, key))?;
            let body = out
                .body
                .collect()
                .await
                .map_err(|e| CliError::Aws(format!("GetObject s3://{bucket}/{key}: {e}")))?;
            return Ok(body.to_vec());
        }
    }
    Err(CliError::Aws(format!(
        "{arn}: no artifact under s3://{bucket}/{prefix} is tagged with this layer version"
    )))
}

/// A failed S3 call `op` on `s3://bucket/key`, as [`CliError::aws_call`] names it.
fn s3_error<E: std::error::Error>(op: &str, bucket: &str, key: &str) -> impl FnOnce(E) -> CliError {
    move |e| CliError::aws_call(&format!("{op} s3://{bucket}/{key}"), &e)
}

/// GET of a (presigned) URL.
async fn download(url: &str) -> Result<Vec<u8>, CliError> {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::{client::legacy::Client, rt::TokioExecutor};
    let fail = |what: String| CliError::Aws(format!("downloading the layer: {what}"));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| fail(format!("no TLS roots: {e}")))?
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| fail(format!("bad Content.Location: {e}")))?;
    let response = client.get(uri).await.map_err(|e| fail(error_chain(&e)))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| fail(error_chain(&e)))?
        .to_bytes();
    if !status.is_success() {
        return Err(fail(format!(
            "HTTP {status}: {:.300}",
            String::from_utf8_lossy(&body)
        )));
    }
    Ok(body.to_vec())
}

/// Unpacks `zip` into `into` (replacing it), refusing entries that would land outside it and links;
/// returns the number of files. The zip is unpacked next to `into` first, so a failure leaves no half folder.
pub fn unpack(zip: &[u8], into: &Path) -> Result<usize, CliError> {
    let bad = |what: String| {
        CliError::Aws(format!(
            "unpacking the layer into {}: {what}",
            into.display()
        ))
    };
    let io = |path: &Path, e: std::io::Error| bad(format!("{}: {e}", path.display()));
    let parent = into
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
    let staging = parent.join(format!(
        ".{}.partial-{}",
        into.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&staging);
    let result = extract(zip, &staging).map_err(bad);
    let files = match result {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    if into.exists() {
        std::fs::remove_dir_all(into).map_err(|e| io(into, e))?;
    }
    std::fs::rename(&staging, into).map_err(|e| io(into, e))?;
    Ok(files)
}

/// Writes the entries of `zip` under `staging`; returns the number of files.
fn extract(zip: &[u8], staging: &Path) -> Result<usize, String> {
    let io = |path: &Path, e: std::io::Error| format!("{}: {e}", path.display());
    let mut archive = zip::ZipArchive::new(Cursor::new(zip)).map_err(|e| e.to_string())?;
    let mut files = 0;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(|e| e.to_string())?;
        let Some(relative) = entry.enclosed_name() else {
            return Err(format!(
                "entry {:?} points outside the folder",
                entry.name()
            ));
        };
        if entry.is_symlink() {
            return Err(format!("entry {:?} is a link", entry.name()));
        }
        let path = staging.join(relative);
        if entry.is_dir() {
            std::fs::create_dir_all(&path).map_err(|e| io(&path, e))?;
            continue;
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        }
        let mut file = std::fs::File::create(&path).map_err(|e| io(&path, e))?;
        std::io::copy(&mut entry, &mut file).map_err(|e| io(&path, e))?;
        if let Some(mode) = entry.unix_mode() {
            use std::os::unix::fs::PermissionsExt;
            let mode = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| io(&path, e))?;
        }
        files += 1;
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, data) in entries {
            w.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    #[test]
    fn arns_give_name_and_version() {
        assert_eq!(
            parse_arn("arn:aws:lambda:us-east-1:123456789012:layer:demo:7").unwrap(),
            ("demo".to_owned(), 7)
        );
        let e = parse_arn("arn:aws:lambda:us-east-1:123456789012:function:f").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("LAYER_VERSION_ARN"), "{e}");
    }

    #[test]
    fn unpacking_replaces_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let into = dir.path().join("demo-1-abc");
        std::fs::create_dir_all(into.join("stale")).unwrap();
        let zip = zip_of(&[
            ("python/six.py", b"x = 1\n"),
            ("python/pkg/__init__.py", b""),
        ]);
        assert_eq!(unpack(&zip, &into).unwrap(), 2);
        assert_eq!(
            std::fs::read(into.join("python/six.py")).unwrap(),
            b"x = 1\n"
        );
        assert!(!into.join("stale").exists());
    }

    #[test]
    fn entries_outside_the_folder_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let into = dir.path().join("layer");
        let zip = zip_of(&[("python/ok.py", b""), ("../evil.py", b"boom")]);
        let e = unpack(&zip, &into).unwrap_err();
        assert!(e.to_string().contains("../evil.py"), "{e}");
        assert!(!dir.path().join("evil.py").exists());
        assert!(!into.exists(), "nothing unpacked");
    }
}
