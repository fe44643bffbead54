//! Which builder images exist: the repository's tags read per runtime x architecture.

use std::{collections::BTreeSet, fmt};

use super::error::ImageError;
use super::stack::{ImageStack, Step};
use crate::{
    aws::AwsFault,
    request::{Architecture, Runtime},
};

/// What the repository holds for one runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRow {
    pub runtime: Runtime,
    /// The image its job definitions run, `<repository>:python3.X-<ImageTag>`.
    pub image: String,
    /// The multi-architecture tag exists (what the job definitions need).
    pub multi_arch: bool,
    /// The architectures whose own tag (`…-arm64`, `…-x86_64`) exists.
    pub architectures: Vec<Architecture>,
    /// The runtime is in the stack's BuildRuntimes.
    pub in_stack: bool,
}

impl fmt::Display for ImageRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yes_no = |b: bool| if b { "yes" } else { "no " };
        write!(
            f,
            "{:<11} multi-arch {}  arm64 {}  x86_64 {}  {}",
            self.runtime.as_str(),
            yes_no(self.multi_arch),
            yes_no(self.architectures.contains(&Architecture::Arm64)),
            yes_no(self.architectures.contains(&Architecture::X86_64)),
            self.image
        )?;
        if !self.in_stack {
            f.write_str("  (not in BuildRuntimes)")?;
        }
        Ok(())
    }
}

/// Every tag in the repository (DescribeImages, all pages).
pub async fn existing_tags(
    ecr: &aws_sdk_ecr::Client,
    repository_name: &str,
) -> Result<BTreeSet<String>, ImageError> {
    let mut tags = BTreeSet::new();
    let mut pages = ecr
        .describe_images()
        .repository_name(repository_name)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| AwsFault::from_sdk("DescribeImages", &e))?;
        for detail in page.image_details() {
            tags.extend(detail.image_tags().iter().cloned());
        }
    }
    Ok(tags)
}

/// One row per runtime (all five; those outside BuildRuntimes are marked), from the repository's tags.
pub fn rows(stack: &ImageStack, tags: &BTreeSet<String>) -> Vec<ImageRow> {
    Runtime::ALL
        .into_iter()
        .map(|runtime| ImageRow {
            runtime,
            image: stack.image_uri(&stack.tag(runtime)),
            multi_arch: tags.contains(&stack.step_tag(runtime, Step::Manifest)),
            architectures: Architecture::ALL
                .into_iter()
                .filter(|arch| tags.contains(&stack.step_tag(runtime, Step::Arch(*arch))))
                .collect(),
            in_stack: stack.runtimes.contains(&runtime),
        })
        .collect()
}

/// `layerforge image list`: which runtime x architecture images the stack's repository holds.
pub async fn list_images(
    ecr: &aws_sdk_ecr::Client,
    stack: &ImageStack,
) -> Result<Vec<ImageRow>, ImageError> {
    let tags = existing_tags(ecr, stack.repository_name()?).await?;
    Ok(rows(stack, &tags))
}
