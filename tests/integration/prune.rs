//! Retention (issue 24 item 3) against moto's Lambda: `layerforge prune`'s library keeps the newest version, a
//! version a function references (naming the function) and a shared one, and deletes the rest; `--dry-run`
//! deletes nothing. Five versions are published, one is attached to a function, one is shared.

use aws_sdk_lambda::{
    primitives::Blob,
    types::{Architecture, LayerVersionContentInput, Runtime},
};
use layerforge::prune::{self, Policy};

use crate::{
    helpers::{self, unique},
    publish::six_zip,
};

async fn numbers(lambda: &aws_sdk_lambda::Client, layer: &str) -> Vec<i64> {
    let mut n: Vec<i64> = prune::versions(lambda, layer)
        .await
        .unwrap()
        .iter()
        .map(|v| v.number)
        .collect();
    n.sort();
    n
}

#[tokio::test]
async fn prune_keeps_the_latest_a_used_and_a_shared_version_and_deletes_the_rest() {
    let sdk = helpers::sdk().await;
    let lambda = aws_sdk_lambda::Client::new(&sdk);
    let layer = unique("prune").to_lowercase();
    let mut arns = Vec::new();
    for i in 1..=5 {
        let out = lambda
            .publish_layer_version()
            .layer_name(&layer)
            .content(
                LayerVersionContentInput::builder()
                    .zip_file(Blob::new(six_zip(&format!("{layer}-{i}"))))
                    .build(),
            )
            .compatible_runtimes(Runtime::Python312)
            .compatible_architectures(Architecture::Arm64)
            .send()
            .await
            .unwrap();
        arns.push(out.layer_version_arn().unwrap().to_owned());
    }
    // Version 2 is attached to a function; version 3 is shared with another account.
    let moto = layerforge::local::moto::Moto::new(&helpers::endpoint()).unwrap();
    let role =
        layerforge::local::provision::iam_role(&moto, &unique("fn-role"), "lambda.amazonaws.com")
            .await
            .unwrap();
    let function = unique("uses-layer");
    lambda
        .create_function()
        .function_name(&function)
        .runtime(Runtime::Python312)
        .role(role)
        .handler("app.handler")
        .code(
            aws_sdk_lambda::types::FunctionCode::builder()
                .zip_file(Blob::new(six_zip("function")))
                .build(),
        )
        .layers(&arns[1])
        .send()
        .await
        .unwrap();
    lambda
        .add_layer_version_permission()
        .layer_name(&layer)
        .version_number(3)
        .statement_id("layerforge-account-111122223333")
        .action("lambda:GetLayerVersion")
        .principal("111122223333")
        .send()
        .await
        .unwrap();

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let policy = |dry_run| Policy {
        keep: 1,
        older_than_days: None,
        include_shared: false,
        dry_run,
    };
    let decisions = |report: &prune::Report| -> Vec<(i64, &'static str)> {
        report
            .versions
            .iter()
            .map(|f| (f.version, f.decision))
            .collect()
    };

    // Dry run: the report, and nothing deleted.
    let dry = prune::prune(&lambda, &layer, &policy(true), now)
        .await
        .unwrap();
    assert_eq!(
        decisions(&dry),
        [
            (5, "kept"),
            (4, "would delete"),
            (3, "kept"),
            (2, "kept"),
            (1, "would delete")
        ],
        "{dry:?}"
    );
    assert_eq!(dry.versions[0].reason, "the newest version");
    assert!(dry.versions[2].reason.starts_with("shared"), "{dry:?}");
    assert_eq!(dry.versions[3].functions, vec![function.clone()], "{dry:?}");
    assert_eq!(numbers(&lambda, &layer).await, [1, 2, 3, 4, 5]);

    // For real: versions 4 and 1 go, and only they.
    let real = prune::prune(&lambda, &layer, &policy(false), now)
        .await
        .unwrap();
    assert_eq!(real.count("deleted"), 2, "{real:?}");
    assert_eq!(numbers(&lambda, &layer).await, [2, 3, 5]);

    // Shared versions go only when asked; the used one and the newest never.
    let shared = Policy {
        include_shared: true,
        ..policy(false)
    };
    let again = prune::prune(&lambda, &layer, &shared, now).await.unwrap();
    assert_eq!(
        decisions(&again),
        [(5, "kept"), (3, "deleted"), (2, "kept")],
        "{again:?}"
    );
    assert_eq!(numbers(&lambda, &layer).await, [2, 5]);

    // The scheduled pruning takes the layers this stack built (its build records), and only those.
    let (bucket, _) = helpers::bucket_with_events(&sdk, "lf-prune", None).await;
    let s3 = layerforge::aws::s3_client(&sdk);
    s3.put_object()
        .bucket(&bucket)
        .key(format!(
            ".layerforge/builds/{layer}/python3.12-arm64/0123456789abcdef.json"
        ))
        .body(b"{}".to_vec().into())
        .send()
        .await
        .unwrap();
    let other = unique("not-ours").to_lowercase();
    for i in 1..=3 {
        lambda
            .publish_layer_version()
            .layer_name(&other)
            .content(
                LayerVersionContentInput::builder()
                    .zip_file(Blob::new(six_zip(&format!("{other}-{i}"))))
                    .build(),
            )
            .send()
            .await
            .unwrap();
    }
    let config = helpers::config(&bucket, "{}", &[]);
    assert_eq!(
        prune::stack_layers(&s3, &config).await.unwrap(),
        vec![layer.clone()]
    );
    let policy =
        prune::scheduled_policy(|k| (k == "PRUNE_OLDER_THAN_DAYS").then(|| "0".to_owned()))
            .unwrap();
    assert_eq!((policy.keep, policy.older_than_days), (5, None));
    let reports = prune::scheduled(&s3, &lambda, &config, &Policy { keep: 1, ..policy }, now)
        .await
        .unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(
        numbers(&lambda, &layer).await,
        [2, 5],
        "the used and the newest stay"
    );
    assert_eq!(
        numbers(&lambda, &other).await,
        [1, 2, 3],
        "a layer this stack never built"
    );
    assert!(prune::scheduled_policy(|k| (k == "PRUNE_KEEP").then(|| "0".to_owned())).is_err());
}
