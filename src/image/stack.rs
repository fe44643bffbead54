//! The stack's image-building resources ([`ImageStack`], read from its outputs) and the names they give: the
//! tags each [`Step`] pushes, the image URIs and the CodeBuild project that runs a step.

use std::fmt;

use super::error::ImageError;
use crate::request::{Architecture, Runtime};

/// The stack's image-building resources, from its outputs (ArtifactBucketName, BuilderRepositoryUri,
/// BuilderImageTag, BuiltRuntimes, Image*ProjectName).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageStack {
    pub bucket: String,
    /// The repository URI without a tag: `ACCOUNT.dkr.ecr.REGION.amazonaws.com/NAME`.
    pub repository_uri: String,
    /// The version part of the tags (the stack's ImageTag parameter).
    pub image_tag: String,
    /// The runtimes the stack builds layers for (its BuildRuntimes).
    pub runtimes: Vec<Runtime>,
    pub arm64_project: String,
    pub x86_64_project: String,
    pub manifest_project: String,
}

/// One of the three builds that make a runtime's image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    /// The image of one architecture.
    Arch(Architecture),
    /// The multi-architecture tag joining both.
    Manifest,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Arch(arch) => f.write_str(arch.as_str()),
            Step::Manifest => f.write_str("manifest"),
        }
    }
}

/// The stack outputs [`ImageStack::from_outputs`] reads.
pub const STACK_OUTPUTS: [&str; 7] = [
    "ArtifactBucketName",
    "BuilderRepositoryUri",
    "BuilderImageTag",
    "BuiltRuntimes",
    "ImageBuildArm64ProjectName",
    "ImageBuildX86ProjectName",
    "ImageManifestProjectName",
];

impl ImageStack {
    /// From the stack's outputs (name -> value, e.g. DescribeStacks' `Outputs`); a missing or empty output, or a
    /// runtime BuildRuntimes can't hold, is an error naming it.
    pub fn from_outputs(
        outputs: &std::collections::BTreeMap<String, String>,
    ) -> Result<Self, ImageError> {
        let get = |name: &'static str| -> Result<String, ImageError> {
            match outputs.get(name).map(|v| v.trim()) {
                Some(v) if !v.is_empty() => Ok(v.to_owned()),
                _ => Err(ImageError::InvalidInput {
                    field: name,
                    message: "the stack has no such output (deployed from an older template? run sam deploy)"
                        .to_owned(),
                }),
            }
        };
        let runtimes = get("BuiltRuntimes")?
            .split(',')
            .map(|r| {
                r.trim()
                    .parse::<Runtime>()
                    .map_err(|message| ImageError::InvalidInput {
                        field: "BuiltRuntimes",
                        message,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let stack = Self {
            bucket: get("ArtifactBucketName")?,
            repository_uri: get("BuilderRepositoryUri")?,
            image_tag: get("BuilderImageTag")?,
            runtimes,
            arm64_project: get("ImageBuildArm64ProjectName")?,
            x86_64_project: get("ImageBuildX86ProjectName")?,
            manifest_project: get("ImageManifestProjectName")?,
        };
        stack.repository_name()?;
        Ok(stack)
    }

    /// The tag the job definitions of `runtime` run: `python3.X-<ImageTag>`.
    pub fn tag(&self, runtime: Runtime) -> String {
        format!("{}-{}", runtime.as_str(), self.image_tag)
    }

    /// The tag a step pushes: `python3.X-<ImageTag>-<arch>`, or the multi-architecture tag.
    pub fn step_tag(&self, runtime: Runtime, step: Step) -> String {
        match step {
            Step::Arch(arch) => format!("{}-{}", self.tag(runtime), arch.as_str()),
            Step::Manifest => self.tag(runtime),
        }
    }

    /// `<repository URI>:<tag>`.
    pub fn image_uri(&self, tag: &str) -> String {
        format!("{}:{tag}", self.repository_uri)
    }

    /// The CodeBuild project that runs a step.
    pub fn project(&self, step: Step) -> &str {
        match step {
            Step::Arch(Architecture::Arm64) => &self.arm64_project,
            Step::Arch(Architecture::X86_64) => &self.x86_64_project,
            Step::Manifest => &self.manifest_project,
        }
    }

    /// The repository's name: what follows the registry host in its URI.
    pub fn repository_name(&self) -> Result<&str, ImageError> {
        match self.repository_uri.split_once('/') {
            Some((host, name)) if !host.is_empty() && !name.is_empty() && !name.contains(':') => {
                Ok(name)
            }
            _ => Err(ImageError::InvalidInput {
                field: "repository_uri",
                message: format!(
                    "{:?} is not REGISTRY/NAME (without a tag)",
                    self.repository_uri
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn outputs() -> BTreeMap<String, String> {
        [
            ("ArtifactBucketName", "layerforge-abc"),
            (
                "BuilderRepositoryUri",
                "123456789012.dkr.ecr.us-east-1.amazonaws.com/layerforge-builderrepository-x",
            ),
            ("BuilderImageTag", "0.1.0"),
            ("BuiltRuntimes", "python3.12,python3.13"),
            ("ImageBuildArm64ProjectName", "lf-builder-image-arm64"),
            ("ImageBuildX86ProjectName", "lf-builder-image-x86_64"),
            ("ImageManifestProjectName", "lf-builder-image-manifest"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    #[test]
    fn the_stack_outputs_give_the_image_stack_and_its_tags() {
        let stack = ImageStack::from_outputs(&outputs()).expect("complete outputs");
        assert_eq!(stack.runtimes, [Runtime::Python312, Runtime::Python313]);
        assert_eq!(
            stack.repository_name().ok(),
            Some("layerforge-builderrepository-x")
        );
        assert_eq!(
            stack.project(Step::Arch(Architecture::X86_64)),
            "lf-builder-image-x86_64"
        );
        assert_eq!(
            stack.step_tag(Runtime::Python313, Step::Manifest),
            "python3.13-0.1.0"
        );
        assert_eq!(
            stack.step_tag(Runtime::Python313, Step::Arch(Architecture::Arm64)),
            "python3.13-0.1.0-arm64"
        );
        assert_eq!(
            stack.image_uri(&stack.tag(Runtime::Python312)),
            "123456789012.dkr.ecr.us-east-1.amazonaws.com/layerforge-builderrepository-x:python3.12-0.1.0"
        );
    }

    #[test]
    fn a_missing_or_bad_output_is_named() {
        for name in STACK_OUTPUTS {
            let mut o = outputs();
            o.remove(name);
            let err = ImageStack::from_outputs(&o).expect_err(name);
            assert!(err.to_string().starts_with(&format!("{name}: ")), "{err}");
        }
        let mut o = outputs();
        o.insert("BuiltRuntimes".into(), "python3.12,python2.7".into());
        let err = ImageStack::from_outputs(&o).expect_err("python2.7");
        assert!(
            err.to_string()
                .starts_with("BuiltRuntimes: unknown runtime \"python2.7\""),
            "{err}"
        );
        let mut o = outputs();
        o.insert("BuilderRepositoryUri".into(), "no-slash".into());
        let err = ImageStack::from_outputs(&o).expect_err("no registry");
        assert_eq!(err.error_type(), "InvalidInput");
        assert!(err.to_string().starts_with("repository_uri:"), "{err}");
    }
}
