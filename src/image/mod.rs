//! Builder images, built in the cloud (DESIGN §11): no Docker on the user's machine.
//!
//! The protocol, in the order `layerforge image build` runs it:
//!
//! 1. [`sources`] packs what `builder/Dockerfile` needs (the Dockerfile, the buildspecs, `Cargo.toml`,
//!    `Cargo.lock`, `rust-toolchain.toml`, `src/`) into a reproducible zip and uploads it to the stack's bucket
//!    as `.layerforge/sources/<sha256>.zip`: outside the artifact prefix, so it triggers nothing.
//! 2. [`build`] asks ECR which tags exist and plans, per runtime, the builds still needed: one per architecture
//!    in that architecture's CodeBuild project (`builder/buildspec.yml` pushes `python3.X-<ImageTag>-<arch>`) and
//!    one in the manifest project (`builder/buildspec-manifest.yml` waits for both and pushes the
//!    multi-architecture `python3.X-<ImageTag>` the job definitions run). A runtime whose tag exists is left
//!    alone: the repository's tags are immutable.
//! 3. It starts them all with the source location and `PYTHON_VERSION`, `IMAGE_TAG`, `REPOSITORY_URI` (and
//!    `ARCH`) overridden, then, when asked to wait, follows them with BatchGetBuilds. When an architecture's
//!    build fails its runtime's manifest build is stopped, and the failure is reported with the failed
//!    phase's type and context message.
//!
//! [`list`] answers which runtime x architecture images exist. [`stack`] holds the vocabulary they share (the
//! stack's resources, the tags, the build steps) and [`error`] how they fail.

pub mod build;
pub mod error;
pub mod list;
pub mod sources;
pub mod stack;

pub use build::{
    BuildOptions, BuildReport, ImageClients, ImageOutcome, ImageReport, Progress, build_images,
};
pub use error::ImageError;
pub use list::{ImageRow, list_images};
pub use stack::{ImageStack, STACK_OUTPUTS, Step};
