//! How [`Client`] sends a request: the URL (segments percent-encoded), the headers, retries as far as
//! the request's class of repeat and the policy allow, and the answer decoded or made an [`Error`].
//! Which route a call takes, and how safely it repeats, the methods in `jobs.rs` and `operator.rs` say.

use std::time::Duration;

use errand_protocol::{ErrorBody, Health, code};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::{Client, Repeat};
use crate::error::{Error, Result};

impl Client {
    // --- plumbing ----------------------------------------------------------------------------

    pub(super) async fn get_json<T: DeserializeOwned>(
        &self,
        path: &[&str],
        query: &[(&str, String)],
    ) -> Result<T> {
        self.call(
            Method::GET,
            path,
            query,
            None,
            Repeat::Safe,
            self.inner.request_timeout,
        )
        .await
    }

    pub(super) async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &[&str],
        body: &B,
        repeat: Repeat,
    ) -> Result<T> {
        let body = to_body(body)?;
        self.call(
            Method::POST,
            path,
            &[],
            Some(body),
            repeat,
            self.inner.request_timeout,
        )
        .await
    }

    pub(super) async fn post_empty<T: DeserializeOwned>(
        &self,
        path: &[&str],
        repeat: Repeat,
    ) -> Result<T> {
        self.call(
            Method::POST,
            path,
            &[],
            None,
            repeat,
            self.inner.request_timeout,
        )
        .await
    }

    /// Sends a request, retrying it as its [`Repeat`] and the policy allow.
    pub(super) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &[&str],
        query: &[(&str, String)],
        body: Option<Vec<u8>>,
        repeat: Repeat,
        timeout: Duration,
    ) -> Result<T> {
        let url = self.url(path, query);
        let start = Instant::now();
        let policy = self.inner.retry;
        let mut retries = 0u32;
        loop {
            let err = match self
                .once(method.clone(), url.clone(), body.clone(), timeout)
                .await
            {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let again = match repeat {
                Repeat::Safe => err.is_retryable(),
                Repeat::IfUntouched => err.is_connect() || err.is_refused_untouched(),
                Repeat::Never => false,
            };
            if !again {
                return Err(err);
            }
            let delay = policy.delay(retries, err.retry_after());
            if start.elapsed() + delay > policy.max_elapsed {
                return Err(err);
            }
            tracing::debug!(%method, path = url.path(), error = %err, ?delay, retries, "retrying");
            tokio::time::sleep(delay).await;
            retries += 1;
        }
    }

    async fn once<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<T> {
        let mut req = self.inner.http.request(method, url).timeout(timeout);
        if let Some(auth) = &self.inner.auth {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        if let Some(body) = body {
            req = req
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(body);
        }
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = resp.bytes().await.map_err(transport)?;
        if status.is_success() {
            serde_json::from_slice(&bytes).map_err(|source| Error::Decode {
                status: status.as_u16(),
                source,
            })
        } else {
            Err(api_error(status, retry_after, &bytes))
        }
    }

    /// The base URL with `path`'s segments percent-encoded after its own path, and `query`.
    fn url(&self, path: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.inner.base.clone();
        let mut p = url.path().trim_end_matches('/').to_string();
        for seg in path {
            p.push('/');
            encode_segment(seg, &mut p);
        }
        url.set_path(&p);
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        url
    }
}

fn transport(e: reqwest::Error) -> Error {
    if e.is_builder() {
        Error::InvalidRequest(e.to_string())
    } else {
        Error::Transport(e)
    }
}

/// The error of a non-success answer: the API's `ErrorBody`, or one made up from the status.
fn api_error(status: StatusCode, retry_after: Option<Duration>, body: &[u8]) -> Error {
    if let Ok(b) = serde_json::from_slice::<ErrorBody>(body) {
        return Error::Api {
            status: status.as_u16(),
            code: b.error.code,
            message: b.error.message,
            field: b.error.field,
            retry_after,
        };
    }
    let code = match status.as_u16() {
        502..=504 => code::UNAVAILABLE.to_string(),
        429 => code::RATE_LIMITED.to_string(),
        404 => code::NOT_FOUND.to_string(),
        401 => code::UNAUTHORIZED.to_string(),
        403 => code::FORBIDDEN.to_string(),
        s => format!("http_{s}"),
    };
    // `GET /health/ready` answers 503 with a `Health` body naming the reason.
    let message = match serde_json::from_slice::<Health>(body) {
        Ok(h) => h.status,
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                status.canonical_reason().unwrap_or("error").to_string()
            } else {
                text.chars().take(512).collect()
            }
        }
    };
    Error::Api {
        status: status.as_u16(),
        code,
        message,
        field: None,
        retry_after,
    }
}

pub(super) fn to_body<B: Serialize + ?Sized>(body: &B) -> Result<Vec<u8>> {
    serde_json::to_vec(body)
        .map_err(|e| Error::InvalidRequest(format!("the body does not serialize: {e}")))
}

pub(super) fn push_opt<V: ToString>(
    query: &mut Vec<(&'static str, String)>,
    name: &'static str,
    v: Option<V>,
) {
    if let Some(v) = v {
        query.push((name, v.to_string()));
    }
}

/// A queue name as a path segment: `.` and `..` would be taken as "this" and "parent" directory by
/// every URL parser (percent-encoded too), so no request could name them.
pub(super) fn queue_seg(queue: &str) -> Result<&str> {
    if queue == "." || queue == ".." {
        return Err(Error::InvalidRequest(format!(
            "queue {queue:?} cannot be named in a URL"
        )));
    }
    Ok(queue)
}

/// Percent-encodes everything but RFC 3986's unreserved characters, so that `/ ? # %` and the like in a
/// segment stay in it.
fn encode_segment(seg: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in seg.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xF)] as char);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_and_queries_are_percent_encoded() {
        let c = Client::new("http://127.0.0.1:1/base/").unwrap();
        let url = c.url(
            &["v1", "queues", "pay.v2:eu", "jobs", "a/b?c#d %"],
            &[("kind", "x&y=z +".to_string())],
        );
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:1/base/v1/queues/pay.v2%3Aeu/jobs/a%2Fb%3Fc%23d%20%25?kind=x%26y%3Dz+%2B"
        );
    }

    #[test]
    fn dot_queues_are_refused_and_bad_urls_too() {
        assert!(queue_seg("..").is_err());
        assert!(queue_seg("a..b").is_ok());
        assert!(matches!(
            Client::new("ftp://x"),
            Err(Error::InvalidRequest(_))
        ));
        assert!(matches!(
            Client::new("not a url"),
            Err(Error::InvalidRequest(_))
        ));
    }

    #[test]
    fn foreign_error_answers_get_a_code_from_their_status() {
        let e = api_error(StatusCode::BAD_GATEWAY, None, b"<html>bad gateway</html>");
        assert!(e.is_unavailable() && !e.is_refused_untouched());
        let e = api_error(
            StatusCode::CONFLICT,
            None,
            br#"{"error":{"code":"lease_lost","message":"m"}}"#,
        );
        assert!(e.is_lease_lost());
        let e = api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            Some(Duration::from_secs(1)),
            br#"{"status":"shutting down"}"#,
        );
        assert!(e.is_refused_untouched());
        assert_eq!(e.to_string(), "unavailable (503): shutting down");
    }
}
