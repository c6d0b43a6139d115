//! Authentication: the `auth: {authenticator: <extension id>}` key of
//! receivers and exporters, and the `bearertokenauth` extension.
//!
//! A receiver asks the named extension to check each request's headers and
//! answers 401 / UNAUTHENTICATED when it refuses; an exporter asks it for the
//! headers to add to each outgoing request. Tokens are never logged, never in
//! metrics, and `Debug` prints them as `[REDACTED]`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_yaml_ng::Value;

use crate::component::{
    parse_config, ComponentConfig, ComponentError, ConfigFieldError, Extension, ExtensionFactory,
    Lifecycle, Registry, Settings,
};
use crate::host::Host;

pub fn register(r: &mut Registry) {
    r.add_extension(Arc::new(BearerTokenAuthFactory));
}

/// `auth` of a receiver's or an exporter's HTTP/gRPC settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The id of an authenticator extension (`bearertokenauth/ingest`).
    pub authenticator: String,
}

impl AuthConfig {
    /// Checks the id's form; `key` is where the section sits.
    pub fn validate(&self, key: &[&str]) -> Result<(), ConfigFieldError> {
        if crate::component::ComponentId::parse(&self.authenticator).is_err() {
            let mut path = key.to_vec();
            path.push("authenticator");
            return Err(ConfigFieldError::at(
                &path,
                format!(
                    "`authenticator` {:?} is not a component id such as bearertokenauth/ingest",
                    self.authenticator
                ),
            ));
        }
        Ok(())
    }
}

/// Why a request was not authenticated. The text names what was wrong,
/// never the credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AuthError(pub String);

/// Checks the credentials of requests a receiver gets.
pub trait ServerAuthenticator: Send + Sync {
    fn authenticate(&self, headers: &HeaderMap) -> Result<(), AuthError>;
}

/// Adds credentials to the requests an exporter sends.
pub trait ClientAuthenticator: Send + Sync {
    fn headers(&self) -> Result<Vec<(HeaderName, HeaderValue)>, AuthError>;
}

/// What an authenticator extension offers, registered in the [`Host`].
#[derive(Clone)]
pub struct Authenticator {
    pub server: Option<Arc<dyn ServerAuthenticator>>,
    pub client: Option<Arc<dyn ClientAuthenticator>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("server", &self.server.is_some())
            .field("client", &self.client.is_some())
            .finish()
    }
}

fn not_started(id: &str) -> ComponentError {
    ComponentError::new(format!(
        "auth.authenticator: {id:?} is not a started authenticator extension; configure it under `extensions` and list it in `service.extensions`"
    ))
}

/// The server side of `auth`, for a receiver's start.
pub fn server_authenticator(
    host: &Host,
    auth: &AuthConfig,
) -> Result<Arc<dyn ServerAuthenticator>, ComponentError> {
    let a = host
        .authenticator(&auth.authenticator)
        .ok_or_else(|| not_started(&auth.authenticator))?;
    a.server.ok_or_else(|| {
        ComponentError::new(format!(
            "auth.authenticator: {:?} cannot authenticate incoming requests",
            auth.authenticator
        ))
    })
}

/// The client side of `auth`, for an exporter.
pub fn client_authenticator(
    host: &Host,
    auth: &AuthConfig,
) -> Result<Arc<dyn ClientAuthenticator>, ComponentError> {
    let a = host
        .authenticator(&auth.authenticator)
        .ok_or_else(|| not_started(&auth.authenticator))?;
    a.client.ok_or_else(|| {
        ComponentError::new(format!(
            "auth.authenticator: {:?} cannot add credentials to outgoing requests",
            auth.authenticator
        ))
    })
}

/// A secret string: `Debug` never shows it, and a value of the wrong type is
/// refused without repeating it (a number is taken as its digits).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(pub String);

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Secret;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Secret, E> {
                Err(E::custom("a secret must be a string (quote it)"))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Secret, E> {
                Err(E::custom("a secret must be a string (quote it)"))
            }
        }
        d.deserialize_any(V)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// `bearertokenauth`, with the collector's keys.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BearerTokenAuthConfig {
    /// The header carrying the token (default `Authorization`).
    pub header: String,
    /// The scheme before the token (default `Bearer`); empty sends and
    /// expects the bare token.
    pub scheme: String,
    /// The token.
    pub token: Option<Secret>,
    /// Several tokens a server accepts (a client sends the first).
    pub tokens: Vec<Secret>,
    /// A file holding the token, re-read when it changes (rotation).
    pub filename: Option<String>,
}

impl Default for BearerTokenAuthConfig {
    fn default() -> Self {
        BearerTokenAuthConfig {
            header: "Authorization".into(),
            scheme: "Bearer".into(),
            token: None,
            tokens: Vec::new(),
            filename: None,
        }
    }
}

impl ComponentConfig for BearerTokenAuthConfig {
    fn validate(&self) -> Result<(), ConfigFieldError> {
        let sources = usize::from(self.token.is_some())
            + usize::from(!self.tokens.is_empty())
            + usize::from(self.filename.is_some());
        if sources == 0 {
            return Err(ConfigFieldError::new(
                "set one of `token`, `tokens` or `filename`",
            ));
        }
        if sources > 1 {
            return Err(ConfigFieldError::new(
                "set only one of `token`, `tokens` and `filename`",
            ));
        }
        if HeaderName::from_bytes(self.header.as_bytes()).is_err() {
            return Err(ConfigFieldError::at(
                &["header"],
                format!("`header` {:?} is not a valid header name", self.header),
            ));
        }
        let bad = |t: &Secret| t.0.is_empty() || HeaderValue::from_str(&t.0).is_err();
        if self.token.as_ref().is_some_and(bad) {
            return Err(ConfigFieldError::at(
                &["token"],
                "`token` is empty or holds characters a header cannot carry",
            ));
        }
        if let Some(i) = self.tokens.iter().position(bad) {
            return Err(ConfigFieldError::at(
                &["tokens"],
                format!("`tokens` entry {i} is empty or holds characters a header cannot carry"),
            ));
        }
        if self.filename.as_deref() == Some("") {
            return Err(ConfigFieldError::at(&["filename"], "`filename` is empty"));
        }
        Ok(())
    }
}

/// The tokens, from the config or the file (re-read when its modification
/// time changes).
struct Tokens {
    fixed: Vec<String>,
    file: Option<PathBuf>,
    cached: Mutex<Cached>,
}

/// The file's modification time and tokens as last read, and the
/// modification time of a bad file already warned about.
#[derive(Default)]
struct Cached {
    modified: Option<SystemTime>,
    tokens: Vec<String>,
    warned: Option<Option<SystemTime>>,
}

impl Tokens {
    fn load_file(path: &PathBuf) -> Result<(Option<SystemTime>, Vec<String>), AuthError> {
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let text = std::fs::read_to_string(path).map_err(|e| {
            AuthError(format!(
                "cannot read the token file {}: {e}",
                path.display()
            ))
        })?;
        let token = text.trim().to_string();
        if token.is_empty() || HeaderValue::from_str(&token).is_err() {
            return Err(AuthError(format!(
                "the token file {} is empty or holds characters a header cannot carry",
                path.display()
            )));
        }
        Ok((modified, vec![token]))
    }

    fn current(&self) -> Result<Vec<String>, AuthError> {
        let Some(path) = &self.file else {
            return Ok(self.fixed.clone());
        };
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let mut c = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if c.modified.is_none() || c.modified != modified {
            match Tokens::load_file(path) {
                Ok((m, tokens)) => {
                    c.modified = m;
                    c.tokens = tokens;
                    c.warned = None;
                }
                // Keep the last good token rather than refusing everything;
                // say so once per change of the file.
                Err(e) if !c.tokens.is_empty() => {
                    if c.warned != Some(modified) {
                        c.warned = Some(modified);
                        tracing::warn!("{e}; keeping the previous token");
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(c.tokens.clone())
    }
}

struct BearerToken {
    header: HeaderName,
    scheme: String,
    tokens: Tokens,
}

/// Equal without an early exit on the first differing byte.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl BearerToken {
    fn expected(&self, token: &str) -> String {
        if self.scheme.is_empty() {
            token.to_string()
        } else {
            format!("{} {token}", self.scheme)
        }
    }
}

impl ServerAuthenticator for BearerToken {
    fn authenticate(&self, headers: &HeaderMap) -> Result<(), AuthError> {
        let Some(got) = headers.get(&self.header) else {
            return Err(AuthError(format!("missing {} header", self.header)));
        };
        let tokens = self.tokens.current()?;
        let ok = tokens
            .iter()
            .any(|t| same(got.as_bytes(), self.expected(t).as_bytes()));
        if ok {
            Ok(())
        } else {
            Err(AuthError(format!(
                "wrong credentials in the {} header",
                self.header
            )))
        }
    }
}

impl ClientAuthenticator for BearerToken {
    fn headers(&self) -> Result<Vec<(HeaderName, HeaderValue)>, AuthError> {
        let tokens = self.tokens.current()?;
        let first = tokens
            .first()
            .ok_or_else(|| AuthError("no token configured".into()))?;
        let mut v = HeaderValue::from_str(&self.expected(first))
            .map_err(|_| AuthError("the token cannot be sent in a header".into()))?;
        v.set_sensitive(true);
        Ok(vec![(self.header.clone(), v)])
    }
}

struct BearerTokenAuthFactory;

impl ExtensionFactory for BearerTokenAuthFactory {
    fn type_name(&self) -> &'static str {
        "bearertokenauth"
    }

    fn check_config(&self, raw: &Value) -> Result<(), ConfigFieldError> {
        parse_config::<BearerTokenAuthConfig>(raw).map(|_| ())
    }

    fn create(
        &self,
        settings: Settings,
        raw: &Value,
    ) -> Result<Arc<dyn Extension>, ComponentError> {
        let c = parse_config::<BearerTokenAuthConfig>(raw)
            .map_err(|e| ComponentError::new(e.to_string()))?;
        let header = HeaderName::from_bytes(c.header.as_bytes())
            .map_err(|_| ComponentError::new("header: not a valid header name"))?;
        let fixed: Vec<String> = c
            .token
            .iter()
            .chain(&c.tokens)
            .map(|s| s.0.clone())
            .collect();
        let auth = Arc::new(BearerToken {
            header,
            scheme: c.scheme.clone(),
            tokens: Tokens {
                fixed,
                file: c.filename.as_ref().map(PathBuf::from),
                cached: Mutex::new(Cached::default()),
            },
        });
        Ok(Arc::new(BearerTokenAuth {
            id: settings.id.to_string(),
            auth,
            host: settings.host,
            registered: Mutex::new(None),
        }))
    }
}

struct BearerTokenAuth {
    id: String,
    auth: Arc<BearerToken>,
    host: Arc<Host>,
    registered: Mutex<Option<Authenticator>>,
}

#[async_trait]
impl Lifecycle for BearerTokenAuth {
    async fn start(&self) -> Result<(), ComponentError> {
        // A token file must be readable at start: fail now, not at the first request.
        self.auth
            .tokens
            .current()
            .map_err(|e| ComponentError::new(e.to_string()))?;
        let a = Authenticator {
            server: Some(self.auth.clone()),
            client: Some(self.auth.clone()),
        };
        self.host.add_authenticator(&self.id, a.clone());
        *self.registered.lock().unwrap_or_else(|p| p.into_inner()) = Some(a);
        Ok(())
    }

    async fn shutdown(&self) -> Result<(), ComponentError> {
        if let Some(a) = self
            .registered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            self.host.remove_authenticator(&self.id, &a);
        }
        Ok(())
    }
}

impl Extension for BearerTokenAuth {}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(y: &str) -> Result<BearerTokenAuthConfig, ConfigFieldError> {
        parse_config::<BearerTokenAuthConfig>(&serde_yaml_ng::from_str(y).unwrap())
    }

    fn bearer(y: &str) -> BearerToken {
        let c = parse(y).unwrap();
        BearerToken {
            header: HeaderName::from_bytes(c.header.as_bytes()).unwrap(),
            scheme: c.scheme,
            tokens: Tokens {
                fixed: c
                    .token
                    .iter()
                    .chain(&c.tokens)
                    .map(|s| s.0.clone())
                    .collect(),
                file: c.filename.map(PathBuf::from),
                cached: Mutex::new(Cached::default()),
            },
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn checks_the_scheme_and_token() {
        let b = bearer("token: s3cret");
        assert!(b
            .authenticate(&headers(&[("authorization", "Bearer s3cret")]))
            .is_ok());
        let e = b
            .authenticate(&headers(&[("authorization", "Bearer wrong")]))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "wrong credentials in the authorization header"
        );
        assert!(b
            .authenticate(&headers(&[("authorization", "s3cret")]))
            .is_err());
        let e = b.authenticate(&headers(&[])).unwrap_err();
        assert_eq!(e.to_string(), "missing authorization header");
        let (k, v) = b.headers().unwrap().remove(0);
        assert_eq!(
            (k.as_str(), v.to_str().unwrap()),
            ("authorization", "Bearer s3cret")
        );
        assert!(v.is_sensitive());
    }

    #[test]
    fn several_tokens_another_header_no_scheme() {
        let b = bearer("tokens: [a1, b2]\nheader: X-Api-Key\nscheme: ''");
        assert!(b.authenticate(&headers(&[("x-api-key", "b2")])).is_ok());
        assert!(b.authenticate(&headers(&[("x-api-key", "c3")])).is_err());
        assert_eq!(b.headers().unwrap()[0].1.to_str().unwrap(), "a1");
    }

    #[test]
    fn a_token_file_is_reread_when_it_changes() {
        let path = std::env::temp_dir().join(format!("weft-token-{}", std::process::id()));
        std::fs::write(&path, "first\n").unwrap();
        let b = bearer(&format!("filename: {}", path.display()));
        assert!(b
            .authenticate(&headers(&[("authorization", "Bearer first")]))
            .is_ok());
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&path, "second").unwrap();
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(SystemTime::now() + std::time::Duration::from_secs(5))
            .unwrap();
        assert!(b
            .authenticate(&headers(&[("authorization", "Bearer second")]))
            .is_ok());
        assert!(b
            .authenticate(&headers(&[("authorization", "Bearer first")]))
            .is_err());
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn config_errors_and_no_token_in_debug() {
        assert!(parse("{}").is_err());
        assert!(parse("token: a\nfilename: /x").is_err());
        assert_eq!(parse("token: ''").unwrap_err().path, vec!["token"]);
        assert_eq!(
            parse("token: a\nheader: 'bad header'").unwrap_err().path,
            vec!["header"]
        );
        assert_eq!(parse("token: 12345").unwrap().token.unwrap().0, "12345");
        let e = parse("token: true").unwrap_err();
        assert!(!e.message.contains("true"), "{}", e.message);
        let c = parse("token: hunter2").unwrap();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("[REDACTED]"),
            "{shown}"
        );
    }
}
