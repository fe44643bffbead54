//! Sharing (DESIGN section 14, issue 24 item 2): the grants a build's request asked for (`share`, kept in its
//! build record by submit-build, where the build job can't write), added to every version publish-layer publishes
//! or adopts for that build.
//!
//! AddLayerVersionPermission grants `lambda:GetLayerVersion` on one version (each new version needs its grants
//! again): to an account, to an organization (principal `*` with `OrganizationId`), or to everyone (principal
//! `*`). Source: Lambda API reference, AddLayerVersionPermission. Statement ids are stable
//! ([`crate::vocab::Share::statements`]), so a delivery that comes again adds nothing: the version's policy is read
//! first (GetLayerVersionPolicy) and only missing statements are added; a statement a concurrent delivery added in
//! between is answered `ResourceConflictException` ("The statement id (…) provided already exists"), which counts
//! as granted. Any other error is a fault: the invocation fails, and the next delivery grants what is missing.

use tracing::info;

use super::{latest::version_of, state::PublishState};
use crate::{
    artifact::ArtifactKey,
    aws::AwsFault,
    records::{self, BuildRecord},
    vocab::Share,
};

/// What a build's record says to share; `None` without a record or a share.
pub(super) async fn of_build(
    state: &PublishState,
    bucket: &str,
    key: Option<&ArtifactKey>,
) -> Result<Option<Share>, AwsFault> {
    let Some(key) = key else {
        return Ok(None);
    };
    let record: Option<BuildRecord> = records::read_record(&state.s3, bucket, key)
        .await?
        .and_then(|s| s.value);
    Ok(record
        .and_then(|r| r.request.share)
        .filter(|s| !s.is_empty()))
}

/// Grants `share` on the version `arn` of `layer`; returns how many statements were added (the rest were there).
pub(super) async fn grant(
    state: &PublishState,
    layer: &str,
    arn: &str,
    share: &Share,
) -> Result<usize, AwsFault> {
    let Some(version) = version_of(arn) else {
        return Ok(0);
    };
    let present = statement_ids(&state.lambda, layer, version).await?;
    let mut added = 0;
    for (statement_id, principal, organization) in share.statements() {
        if present.contains(&statement_id) {
            continue;
        }
        let sent = state
            .lambda
            .add_layer_version_permission()
            .layer_name(layer)
            .version_number(version)
            .statement_id(&statement_id)
            .action("lambda:GetLayerVersion")
            .principal(&principal)
            .set_organization_id(organization.clone())
            .send()
            .await;
        match sent {
            Ok(_) => added += 1,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_conflict_exception()) => {}
            Err(e) => return Err(AwsFault::from_sdk("AddLayerVersionPermission", &e)),
        }
    }
    info!(
        layer_version_arn = arn,
        added,
        statements = share.statements().len(),
        "shared"
    );
    Ok(added)
}

/// The statement ids of the version's policy, one per statement (empty for a statement without one; none when the
/// version has no policy). Also what `layerforge prune` asks to tell a shared version.
pub async fn statement_ids(
    lambda: &aws_sdk_lambda::Client,
    layer: &str,
    version: i64,
) -> Result<Vec<String>, AwsFault> {
    let out = match lambda
        .get_layer_version_policy()
        .layer_name(layer)
        .version_number(version)
        .send()
        .await
    {
        Ok(out) => out,
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) =>
        {
            return Ok(Vec::new());
        }
        Err(e) => return Err(AwsFault::from_sdk("GetLayerVersionPolicy", &e)),
    };
    let policy: serde_json::Value =
        serde_json::from_str(out.policy().unwrap_or("{}")).unwrap_or_default();
    Ok(policy["Statement"]
        .as_array()
        .map(|statements| {
            statements
                .iter()
                .map(|s| s["Sid"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default())
}
