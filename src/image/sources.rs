//! The builder's sources as one reproducible zip, uploaded where it triggers nothing.
//!
//! The zip holds exactly what the image build reads: `builder/` (the Dockerfile and the buildspecs) and what the
//! Dockerfile COPYs (`Cargo.toml`, `Cargo.lock`, `rust-toolchain.toml`, `src/`). It is written by the builder's
//! deterministic zip writer (sorted entries, fixed timestamps and permissions), so the same tree gives the same
//! bytes and the same key: `.layerforge/sources/<sha256>.zip`. `.layerforge/` is outside every artifact
//! prefix (ArtifactPrefix can't start with "."), so the upload never reaches publish-layer.

use std::path::{Path, PathBuf};

use aws_sdk_s3::primitives::ByteStream;
use tracing::info;

use super::error::ImageError;
use crate::{
    aws::AwsFault,
    builder::archive::{ZipSource, write_zip},
};

/// Key prefix of the source zips in the stack's bucket.
pub const SOURCE_PREFIX: &str = ".layerforge/sources/";

/// The single files of the source tree that go in, relative to its root.
pub const SOURCE_FILES: [&str; 3] = ["Cargo.toml", "Cargo.lock", "rust-toolchain.toml"];

/// The directories that go in whole.
pub const SOURCE_DIRS: [&str; 2] = ["builder", "src"];

/// The files every source zip must hold for the image build to work.
pub const REQUIRED: [&str; 3] = [
    "builder/Dockerfile",
    "builder/buildspec.yml",
    "builder/buildspec-manifest.yml",
];

/// A packed source zip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedSources {
    /// Where the zip was written.
    pub path: PathBuf,
    /// Hex sha256 of the zip.
    pub sha256: String,
    pub entries: usize,
    pub bytes: u64,
}

impl PackedSources {
    /// `.layerforge/sources/<sha256>.zip`.
    pub fn key(&self) -> String {
        format!("{SOURCE_PREFIX}{}.zip", self.sha256)
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Sources {
        path: path.to_owned(),
        source,
    }
}

/// The files under `root` that go in, sorted by their name in the archive.
pub fn collect(root: &Path) -> Result<Vec<ZipSource>, ImageError> {
    let mut out = Vec::new();
    for name in SOURCE_FILES {
        let path = root.join(name);
        let meta = std::fs::symlink_metadata(&path).map_err(io_error(&path))?;
        if !meta.is_file() {
            return Err(not_a_file(&path));
        }
        out.push(ZipSource {
            name: name.to_owned(),
            path,
            executable: false,
            expect: None,
        });
    }
    for dir in SOURCE_DIRS {
        walk(root, &root.join(dir), &mut out)?;
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    for required in REQUIRED {
        if !out.iter().any(|s| s.name == required) {
            let path = root.join(required);
            return Err(ImageError::Sources {
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "required file missing"),
                path,
            });
        }
    }
    Ok(out)
}

fn not_a_file(path: &Path) -> ImageError {
    ImageError::Sources {
        path: path.to_owned(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file (links are not followed)",
        ),
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<ZipSource>) -> Result<(), ImageError> {
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(io_error(&path))?;
        if kind.is_dir() {
            walk(root, &path, out)?;
        } else if kind.is_file() {
            let relative = path.strip_prefix(root).map_err(|_| not_a_file(&path))?;
            let name = relative
                .components()
                .map(|c| c.as_os_str().to_str())
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| not_a_file(&path))?
                .join("/");
            out.push(ZipSource {
                name,
                path,
                executable: false,
                expect: None,
            });
        } else {
            return Err(not_a_file(&path));
        }
    }
    Ok(())
}

/// Packs the sources under `root` into `out_dir/builder-sources.zip`.
pub fn pack(root: &Path, out_dir: &Path) -> Result<PackedSources, ImageError> {
    let sources = collect(root)?;
    let path = out_dir.join("builder-sources.zip");
    let summary = write_zip(&sources, &path).map_err(io_error(&path))?;
    Ok(PackedSources {
        sha256: hex::encode(summary.sha256),
        entries: summary.entries,
        bytes: summary.zipped_bytes,
        path,
    })
}

/// Uploads a packed zip to `bucket` under its key; returns the key.
pub async fn upload(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    packed: &PackedSources,
) -> Result<String, ImageError> {
    let key = packed.key();
    let body = ByteStream::from_path(&packed.path)
        .await
        .map_err(|e| ImageError::Sources {
            path: packed.path.clone(),
            source: std::io::Error::other(e),
        })?;
    s3.put_object()
        .bucket(bucket)
        .key(&key)
        .content_type("application/zip")
        .body(body)
        .send()
        .await
        .map_err(|e| AwsFault::from_sdk("PutObject", &e))?;
    info!(
        bucket,
        key,
        bytes = packed.bytes,
        "builder sources uploaded"
    );
    Ok(key)
}
