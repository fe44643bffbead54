//! build-status's entry point: `{"matrix_id": "m-…"}` answers for a whole matrix (each pair's state and the
//! overall one); every other query goes to [`crate::status::handle`].

use serde_json::{Value, json};

use super::{MatrixRecord, overall, record_key, valid_id};
use crate::{
    records,
    request::InvalidRequest,
    status::{self, StatusError, StatusState},
};

/// The handler of build-status.
pub async fn handle(state: &StatusState, event: Value) -> Result<Value, StatusError> {
    let Some(id) = matrix_query(&event)? else {
        let answer = Box::pin(status::handle(state, event)).await?;
        return Ok(serde_json::to_value(answer).unwrap_or_default());
    };
    let bucket = state.config.artifact_bucket.as_str();
    let record = records::read_json::<MatrixRecord>(&state.s3, bucket, &record_key(&id))
        .await?
        .and_then(|s| s.value)
        .ok_or_else(|| StatusError::NotFound {
            field: "matrix_id",
            message: format!("no matrix {id} in s3://{bucket}/{}", super::MATRIX_PREFIX),
        })?;
    // One status per artifact: a universal matrix's pairs share theirs.
    let mut seen: Vec<(String, Value)> = Vec::new();
    let mut pairs = Vec::with_capacity(record.pairs.len());
    for pair in &record.pairs {
        let answer = match seen.iter().find(|(k, _)| *k == pair.artifact_key) {
            Some((_, v)) => v.clone(),
            None => {
                let artifact = format!("s3://{bucket}/{}", pair.artifact_key);
                let v = match Box::pin(status::handle(state, json!({ "artifact": artifact }))).await
                {
                    Ok(answer) => serde_json::to_value(answer).unwrap_or_default(),
                    // The matrix was recorded but this pair's build never claimed (its submission failed).
                    Err(StatusError::NotFound { .. }) => json!({
                        "state": "failed",
                        "artifact": artifact,
                        "reason": "never submitted (its submission failed): send the request again",
                    }),
                    Err(e) => return Err(e),
                };
                seen.push((pair.artifact_key.clone(), v.clone()));
                v
            }
        };
        let mut answer = answer;
        answer["runtime"] = json!(pair.runtime);
        answer["architecture"] = json!(pair.architecture);
        pairs.push(answer);
    }
    let states: Vec<&str> = pairs
        .iter()
        .map(|p| p["state"].as_str().unwrap_or("queued"))
        .collect();
    let whole = overall(&states);
    let failed: Vec<String> = pairs
        .iter()
        .filter(|p| matches!(p["state"].as_str(), Some("failed" | "rejected")))
        .map(|p| {
            format!(
                "{}/{}: {}",
                p["runtime"].as_str().unwrap_or("?"),
                p["architecture"].as_str().unwrap_or("?"),
                p["reason"].as_str().unwrap_or("(no reason)")
            )
        })
        .collect();
    let mut answer = json!({
        "matrix_id": record.matrix_id,
        "layer_name": record.layer_name,
        "state": whole,
        "universal": record.universal,
        "universal_reason": record.universal_reason,
        "pairs": pairs,
    });
    if !failed.is_empty() {
        answer["failed"] = json!(failed);
    }
    Ok(answer)
}

/// `Some(id)` for a matrix query; its only field is `matrix_id`.
fn matrix_query(event: &Value) -> Result<Option<String>, InvalidRequest> {
    let Some(map) = event.as_object().filter(|m| m.contains_key("matrix_id")) else {
        return Ok(None);
    };
    if let Some(other) = map.keys().find(|k| *k != "matrix_id") {
        return Err(InvalidRequest::new(
            other.as_str(),
            "a matrix query has only matrix_id",
            other,
        ));
    }
    match map["matrix_id"].as_str().map(str::trim) {
        Some(id) if valid_id(id) => Ok(Some(id.to_owned())),
        _ => Err(InvalidRequest::json(
            "matrix_id",
            "must be a matrix id as submit-build answers it (m- and 16 hex digits)",
            &map["matrix_id"],
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_queries_are_checked() {
        assert_eq!(
            matrix_query(&json!({"matrix_id": "m-0123456789abcdef"})).unwrap(),
            Some("m-0123456789abcdef".to_owned())
        );
        assert_eq!(matrix_query(&json!({"job_id": "x"})).unwrap(), None);
        assert_eq!(
            matrix_query(&json!({"matrix_id": "../x"}))
                .unwrap_err()
                .field,
            "matrix_id"
        );
        assert_eq!(
            matrix_query(&json!({"matrix_id": "m-0123456789abcdef", "job_id": "j"}))
                .unwrap_err()
                .field,
            "job_id"
        );
    }
}
