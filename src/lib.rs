//! layerforge builds Python AWS Lambda layers in the cloud and publishes them exactly once.
//!
//! A caller invokes `submit-build` with a JSON build request ([`request`]); it is validated, fingerprinted
//! ([`artifact`]) and, unless an identical pinned build already exists in S3, submitted as an AWS Batch
//! Fargate job ([`submit`]) whose command runs `layer-builder` ([`builder`]) in the Lambda build image of the
//! runtime. The builder installs the requirements, writes a deterministic zip in the layer layout and uploads it
//! with metadata. The upload's S3 event triggers `publish-layer` ([`publish`]), which checks the zip by ranged
//! reads of its central directory ([`zipcheck`]) and one streamed read of its bytes ([`zipstream`]), and publishes a
//! layer version, once per object version.
//!
//! Each build leaves a record ([`records`]) that publish-layer completes; `build-status` ([`status`]) tells a
//! caller what became of a build from the record, the builder's failure report, the artifact and Batch.
//!
//! The `layerforge` CLI ([`cli`]) invokes the functions, follows builds and fetches layers; [`local`] runs the
//! whole pipeline on one machine against moto's server.
//!
//! The binaries are thin: configuration ([`config`]) and SDK clients ([`aws`]) are built once, and all
//! logic lives here so that tests reach it.

pub mod artifact;
pub mod aws;
pub mod builder;
pub mod cli;
pub mod config;
pub mod fast;
pub mod function_error;
pub mod grant;
pub mod image;
pub mod local;
pub mod matrix;
pub mod observe;
pub mod plan;
pub mod prune;
pub mod publish;
pub mod records;
pub mod request;
pub mod requirements;
pub mod samcache;
pub mod size;
pub mod status;
pub mod submit;
pub mod vocab;
pub mod zipcheck;
mod zipformat;
pub mod ziprules;
pub mod zipstream;
