//! CORS for HTTP receivers, as the collector configures it: the `cors` keys
//! and the answers to preflight and simple cross-origin requests.

use bytes::Bytes;
use http::header::{HeaderValue, VARY};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use serde::Deserialize;

use super::http::Body;

/// `cors` of an HTTP server, the collector's `confighttp.CORSConfig`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Origins allowed to send requests (`https://*.example.com` and `*` allowed).
    pub allowed_origins: Vec<String>,
    /// Request headers allowed besides the CORS-safelisted ones (`*` for any).
    pub allowed_headers: Vec<String>,
    /// Seconds a browser may cache a preflight answer.
    pub max_age: Option<u64>,
}

/// CORS as the collector configures it (rs/cors with credentials allowed):
/// allowed origins are echoed back, preflights answered 204.
pub(crate) struct Cors {
    origins: Vec<String>,
    any_origin: bool,
    headers: Vec<String>,
    any_header: bool,
    max_age: Option<u64>,
}

impl Cors {
    /// None when no origin is allowed: CORS is then off, as in the collector.
    pub(crate) fn new(cfg: &CorsConfig) -> Option<Cors> {
        if cfg.allowed_origins.is_empty() {
            return None;
        }
        // As the collector documents: these are always allowed, and
        // X-Requested-With when no list is configured.
        let mut headers: Vec<String> = [
            "accept",
            "accept-language",
            "content-type",
            "content-language",
            "origin",
        ]
        .map(String::from)
        .to_vec();
        if cfg.allowed_headers.is_empty() {
            headers.push("x-requested-with".into());
        }
        headers.extend(cfg.allowed_headers.iter().map(|h| h.to_ascii_lowercase()));
        Some(Cors {
            any_origin: cfg.allowed_origins.iter().any(|o| o == "*"),
            origins: cfg
                .allowed_origins
                .iter()
                .map(|o| o.to_ascii_lowercase())
                .collect(),
            any_header: headers.iter().any(|h| h == "*"),
            headers,
            max_age: cfg.max_age.filter(|&a| a > 0),
        })
    }

    pub(crate) fn is_preflight<B>(req: &Request<B>) -> bool {
        req.method() == Method::OPTIONS
            && req.headers().contains_key("access-control-request-method")
    }

    fn origin_allowed(&self, origin: &HeaderValue) -> bool {
        if self.any_origin {
            return true;
        }
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        let origin = origin.to_ascii_lowercase();
        self.origins
            .iter()
            .any(|pattern| match pattern.split_once('*') {
                None => *pattern == origin,
                Some((prefix, suffix)) => {
                    origin.len() >= prefix.len() + suffix.len()
                        && origin.starts_with(prefix)
                        && origin.ends_with(suffix)
                }
            })
    }

    pub(crate) fn preflight<B>(&self, origin: &HeaderValue, req: &Request<B>) -> Response<Body> {
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let h = resp.headers_mut();
        h.append(VARY, HeaderValue::from_static("Origin"));
        h.append(
            VARY,
            HeaderValue::from_static("Access-Control-Request-Method"),
        );
        h.append(
            VARY,
            HeaderValue::from_static("Access-Control-Request-Headers"),
        );
        if !self.origin_allowed(origin) {
            return resp;
        }
        let method = req
            .headers()
            .get("access-control-request-method")
            .and_then(|m| m.to_str().ok())
            .map(|m| m.to_ascii_uppercase())
            .unwrap_or_default();
        if !matches!(method.as_str(), "GET" | "POST" | "HEAD") {
            return resp;
        }
        let requested = req
            .headers()
            .get("access-control-request-headers")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let all_allowed = self.any_header
            || requested
                .split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .all(|s| self.headers.contains(&s));
        if !all_allowed {
            return resp;
        }
        let h = resp.headers_mut();
        h.insert("access-control-allow-origin", origin.clone());
        if let Ok(m) = HeaderValue::from_str(&method) {
            h.insert("access-control-allow-methods", m);
        }
        if !requested.trim().is_empty() {
            if let Ok(v) = HeaderValue::from_str(requested) {
                h.insert("access-control-allow-headers", v);
            }
        }
        h.insert(
            "access-control-allow-credentials",
            HeaderValue::from_static("true"),
        );
        if let Some(age) = self.max_age {
            h.insert("access-control-max-age", HeaderValue::from(age));
        }
        resp
    }

    pub(crate) fn decorate(&self, origin: &HeaderValue, resp: &mut Response<Body>) {
        let h = resp.headers_mut();
        h.append(VARY, HeaderValue::from_static("Origin"));
        if self.origin_allowed(origin) {
            h.insert("access-control-allow-origin", origin.clone());
            h.insert(
                "access-control-allow-credentials",
                HeaderValue::from_static("true"),
            );
        }
    }
}
