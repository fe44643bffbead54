//! The few calls to moto's server that need no SDK: its own `/moto-api/` and the query-protocol services
//! (IAM, EC2) whose SDK crates would cost minutes of compile time for a handful of fixture calls.
//!
//! One HTTP/1.1 request per connection over loopback; moto does not check signatures, so the `Authorization`
//! header only carries the credential scope moto routes query calls by.

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// The region every local resource lives in.
pub const REGION: &str = "us-east-1";

/// A call to moto that failed, naming the call.
#[derive(Debug, thiserror::Error)]
pub enum MotoError {
    #[error("moto endpoint must be http://HOST:PORT, got {0:?}")]
    Endpoint(String),
    #[error("{call}: {source}")]
    Io {
        call: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{call}: HTTP {status}: {body}")]
    Status {
        call: String,
        status: u16,
        body: String,
    },
    #[error("{call}: no <{tag}> in moto's answer: {body}")]
    Missing {
        call: String,
        tag: String,
        body: String,
    },
}

/// moto's server at `endpoint` (`http://127.0.0.1:PORT`).
#[derive(Debug, Clone)]
pub struct Moto {
    authority: String,
}

impl Moto {
    pub fn new(endpoint: &str) -> Result<Self, MotoError> {
        let authority = endpoint
            .trim_end_matches('/')
            .strip_prefix("http://")
            .filter(|a| !a.is_empty() && !a.contains('/'))
            .ok_or_else(|| MotoError::Endpoint(endpoint.to_owned()))?;
        Ok(Self {
            authority: authority.to_owned(),
        })
    }

    /// One request; returns (status, body).
    pub async fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<(u16, String), MotoError> {
        let call = format!("{method} {path}");
        let io = |source| MotoError::Io {
            call: call.clone(),
            source,
        };
        let exchange = async {
            let mut stream = TcpStream::connect(&self.authority).await?;
            let mut request = format!(
                "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
                self.authority,
                body.len()
            );
            for (k, v) in headers {
                request.push_str(&format!("{k}: {v}\r\n"));
            }
            request.push_str("\r\n");
            request.push_str(body);
            stream.write_all(request.as_bytes()).await?;
            let mut response = Vec::new();
            stream.read_to_end(&mut response).await?;
            Ok::<_, std::io::Error>(response)
        };
        let response = tokio::time::timeout(Duration::from_secs(30), exchange)
            .await
            .map_err(|_| io(std::io::Error::new(std::io::ErrorKind::TimedOut, "30 s")))?
            .map_err(io)?;
        let response = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| MotoError::Status {
                call: call.clone(),
                status: 0,
                body: preview(&response),
            })?;
        let chunked = head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        let body = if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        };
        Ok((status, body))
    }

    /// True when the server answers on `/moto-api/`.
    pub async fn is_up(&self) -> bool {
        matches!(self.http("GET", "/moto-api/", &[], "").await, Ok((s, _)) if s < 500)
    }

    /// Batch without Docker: jobs then SUCCEED at once and run nothing (DESIGN section 8).
    pub async fn batch_without_docker(&self) -> Result<(), MotoError> {
        let (status, body) = self
            .http(
                "POST",
                "/moto-api/config",
                &[("Content-Type", "application/json")],
                r#"{"batch":{"use_docker":false}}"#,
            )
            .await?;
        if status >= 300 {
            return Err(MotoError::Status {
                call: "POST /moto-api/config".into(),
                status,
                body: preview(&body),
            });
        }
        Ok(())
    }

    /// An AWS query-protocol call (form-encoded POST) to `service`; moto routes by the credential scope.
    pub async fn query(&self, service: &str, params: &[(&str, &str)]) -> Result<String, MotoError> {
        let body: String = params
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential=testing/20260101/{REGION}/{service}/aws4_request, SignedHeaders=host, Signature=0"
        );
        let (status, text) = self
            .http(
                "POST",
                "/",
                &[
                    ("Content-Type", "application/x-www-form-urlencoded"),
                    ("Authorization", &auth),
                ],
                &body,
            )
            .await?;
        if status >= 300 {
            let action = params
                .iter()
                .find(|(k, _)| *k == "Action")
                .map_or("?", |(_, v)| v);
            return Err(MotoError::Status {
                call: format!("{service} {action}"),
                status,
                body: preview(&text),
            });
        }
        Ok(text)
    }
}

/// The text of the first `<tag>…</tag>` in an XML answer.
pub fn xml_value(xml: &str, tag: &str, call: &str) -> Result<String, MotoError> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    xml.find(&open)
        .map(|i| i + open.len())
        .and_then(|start| {
            xml[start..]
                .find(&close)
                .map(|end| xml[start..start + end].to_owned())
        })
        .ok_or_else(|| MotoError::Missing {
            call: call.to_owned(),
            tag: tag.to_owned(),
            body: preview(xml),
        })
}

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn preview(s: &str) -> String {
    s.chars().take(300).collect()
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(tail.get(..n).unwrap_or(tail));
        rest = tail.get(n + 2..).unwrap_or("");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_be_plain_http() {
        assert!(Moto::new("http://127.0.0.1:5000/").is_ok());
        assert!(Moto::new("https://127.0.0.1:5000").is_err());
        assert!(Moto::new("http://127.0.0.1:5000/x").is_err());
    }

    #[test]
    fn xml_values_and_chunks() {
        let xml = "<a><Arn>arn:x</Arn></a>";
        assert_eq!(xml_value(xml, "Arn", "c").unwrap(), "arn:x");
        assert!(matches!(
            xml_value(xml, "vpcId", "c"),
            Err(MotoError::Missing { .. })
        ));
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
    }
}
