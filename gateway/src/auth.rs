//! Client authentication: a JWT from `Authorization: Bearer` or `?token=` at upgrade time, and
//! again in a `refresh` request on a live connection. The token's `sub` becomes the client id,
//! its optional `channels` claim limits what the client may subscribe and publish to, and its
//! `exp` (plus the leeway) is when a live connection that did not refresh is closed.
//!
//! Checked: the signature (HS256, RS256 or ES256; a key file holding one key, or a JWKS document
//! whose keys are chosen by the token's `kid`), `exp` and `nbf` with a clock-skew leeway, and
//! `iss`/`aud` when configured. The key file is re-read while the node runs, so keys rotate
//! without a restart and without touching connected clients. Anonymous mode gives every client
//! a random id and no limits (development only).

use crate::config::{Config, JwtAlgorithm, read_secret};
use crate::protocol::validate_client_id;
use anyhow::{Context, bail};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Who a connection belongs to and what it may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub client_id: String,
    /// Allowed channel patterns (exact names, or a prefix ending in `*`); `None` = any.
    pub channels: Option<Box<[String]>>,
    /// The token's `exp` (seconds since the Unix epoch); `None` for anonymous clients.
    pub expires_at: Option<u64>,
}

impl Identity {
    /// True when the token's `channels` claim (if any) allows this channel.
    pub fn may_use(&self, channel: &str) -> bool {
        match &self.channels {
            None => true,
            Some(patterns) => patterns.iter().any(|p| pattern_matches(p, channel)),
        }
    }
}

fn pattern_matches(pattern: &str, channel: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => channel.starts_with(prefix),
        None => pattern == channel,
    }
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No token, or one that does not verify (signature, `exp`, `nbf`, `iss`, `aud`, `kid`):
    /// HTTP 401.
    #[error("{0}")]
    Unauthorized(String),
    /// A verified token that does not grant a connection: HTTP 403.
    #[error("{0}")]
    Forbidden(String),
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    channels: Option<Vec<String>>,
    #[serde(default)]
    exp: Option<u64>,
}

/// The verification keys in force: by `kid`, and the one key a token without `kid` is checked
/// with (only when there is exactly one).
#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, (DecodingKey, Algorithm)>,
    only: Option<(DecodingKey, Algorithm)>,
}

impl Keys {
    /// Parses a key file: a JWKS document when it is JSON, else one key of `algorithm`.
    fn parse(text: &str, algorithm: JwtAlgorithm) -> anyhow::Result<Keys> {
        if text.trim_start().starts_with('{') {
            return Keys::from_jwks(text);
        }
        let text = text.trim();
        if text.is_empty() {
            bail!("the key file is empty");
        }
        let key = match algorithm {
            JwtAlgorithm::HS256 => (DecodingKey::from_secret(text.as_bytes()), Algorithm::HS256),
            JwtAlgorithm::RS256 => (
                DecodingKey::from_rsa_pem(text.as_bytes()).context("RSA public key (PEM)")?,
                Algorithm::RS256,
            ),
            JwtAlgorithm::ES256 => (
                DecodingKey::from_ec_pem(text.as_bytes()).context("EC public key (PEM)")?,
                Algorithm::ES256,
            ),
        };
        Ok(Keys {
            by_kid: HashMap::new(),
            only: Some(key),
        })
    }

    /// A JWKS document: every key needs a `kid` and an `alg` among HS256, RS256 and ES256 (the
    /// algorithm is pinned per key, so a token cannot pick a weaker one).
    fn from_jwks(text: &str) -> anyhow::Result<Keys> {
        let set: JwkSet = serde_json::from_str(text).context("JWKS document")?;
        if set.keys.is_empty() {
            bail!("the JWKS document has no keys");
        }
        let mut by_kid = HashMap::new();
        for jwk in &set.keys {
            let kid = jwk
                .common
                .key_id
                .clone()
                .context("every JWKS key needs a `kid`")?;
            let algorithm = jwk
                .common
                .key_algorithm
                .and_then(|a| Algorithm::try_from(a).ok())
                .filter(|a| matches!(a, Algorithm::HS256 | Algorithm::RS256 | Algorithm::ES256))
                .with_context(|| format!("JWKS key `{kid}` needs `alg` HS256, RS256 or ES256"))?;
            let key = DecodingKey::from_jwk(jwk).with_context(|| format!("JWKS key `{kid}`"))?;
            by_kid.insert(kid, (key, algorithm));
        }
        let only = (by_kid.len() == 1)
            .then(|| by_kid.values().next().cloned())
            .flatten();
        Ok(Keys { by_kid, only })
    }
}

/// What a token must satisfy besides its signature.
struct Rules {
    issuer: Option<String>,
    audiences: Vec<String>,
    leeway: Duration,
}

impl Rules {
    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.leeway = self.leeway.as_secs();
        validation.validate_nbf = true;
        // Configured claims are required: a token without them is not "not checked", it fails.
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".into());
        }
        if self.audiences.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.audiences);
            validation.required_spec_claims.insert("aud".into());
        }
        validation
    }
}

/// Verifies client tokens.
pub struct Authenticator {
    /// `None` in anonymous mode.
    jwt: Option<Jwt>,
}

struct Jwt {
    /// Swapped whole when the key file changes.
    keys: Arc<RwLock<Arc<Keys>>>,
    rules: Rules,
}

impl Authenticator {
    /// Builds the authenticator the config asks for, reading the key file. Call
    /// [`Authenticator::reload_forever`] (inside the runtime) to follow changes to the file.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        if config.anonymous {
            return Ok(Authenticator { jwt: None });
        }
        let path = &config.jwt_key_file;
        let text = read_secret(path)?;
        let keys = Keys::parse(&text, config.jwt_algorithm)
            .with_context(|| format!("JWT key file {}", path.display()))?;
        Ok(Authenticator {
            jwt: Some(Jwt {
                keys: Arc::new(RwLock::new(Arc::new(keys))),
                rules: Rules {
                    issuer: config.jwt_issuer.clone(),
                    audiences: config.jwt_audiences.clone(),
                    leeway: config.jwt_leeway,
                },
            }),
        })
    }

    /// Re-reads the key file while the process runs: a rotated key set is used for the next
    /// upgrade and refresh; connected clients are not touched.
    pub fn reload_forever(&self, config: &Config) {
        let Some(jwt) = &self.jwt else {
            return;
        };
        let (keys, algorithm) = (Arc::clone(&jwt.keys), config.jwt_algorithm);
        crate::watched::reload_forever(
            "JWT key file",
            config.jwt_key_file.clone(),
            move |text| Keys::parse(text, algorithm),
            move |new| {
                if let Ok(mut current) = keys.write() {
                    let changed = current.by_kid.len() != new.by_kid.len()
                        || current.by_kid.keys().any(|k| !new.by_kid.contains_key(k));
                    if changed {
                        tracing::info!(kids = new.by_kid.len(), "JWT key set reloaded");
                    }
                    *current = Arc::new(new);
                }
            },
        );
    }

    /// An HS256 authenticator with the given secret (tests and fuzzing).
    pub fn hs256(secret: &[u8]) -> Self {
        Authenticator {
            jwt: Some(Jwt {
                keys: Arc::new(RwLock::new(Arc::new(Keys {
                    by_kid: HashMap::new(),
                    only: Some((DecodingKey::from_secret(secret), Algorithm::HS256)),
                }))),
                rules: Rules {
                    issuer: None,
                    audiences: Vec::new(),
                    leeway: Duration::from_secs(30),
                },
            }),
        }
    }

    /// Whether clients need a token (false in anonymous mode).
    pub fn uses_tokens(&self) -> bool {
        self.jwt.is_some()
    }

    /// The leeway past `exp` a live connection is given.
    pub fn leeway(&self) -> Duration {
        self.jwt
            .as_ref()
            .map_or(Duration::ZERO, |jwt| jwt.rules.leeway)
    }

    /// Authenticates an upgrade request from its `Authorization` header and query string.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        query: Option<&str>,
    ) -> Result<Identity, AuthError> {
        if !self.uses_tokens() {
            return Ok(Identity {
                client_id: format!("anon-{:016x}", rand::random::<u64>()),
                channels: None,
                expires_at: None,
            });
        }
        let token = bearer(authorization)
            .or_else(|| query.and_then(token_param))
            .ok_or_else(|| AuthError::Unauthorized("missing token".into()))?;
        self.verify(token)
    }

    /// Verifies one token (an upgrade's, or a `refresh` request's).
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let Some(Jwt { keys, rules }) = &self.jwt else {
            return Err(AuthError::Forbidden("this node does not use tokens".into()));
        };
        let unauthorized = |why: String| AuthError::Unauthorized(format!("invalid token: {why}"));
        let header = jsonwebtoken::decode_header(token).map_err(|e| unauthorized(e.to_string()))?;
        let keys = keys
            .read()
            .map(|k| Arc::clone(&k))
            .map_err(|_| unauthorized("key set unavailable".into()))?;
        let (key, algorithm) = match &header.kid {
            Some(kid) => keys
                .by_kid
                .get(kid)
                .or(keys.only.as_ref().filter(|_| keys.by_kid.is_empty()))
                .ok_or_else(|| unauthorized(format!("unknown key id `{kid}`")))?,
            None => keys.only.as_ref().ok_or_else(|| {
                unauthorized("no `kid` in the header, and the key set has several keys".into())
            })?,
        };
        let claims = jsonwebtoken::decode::<Claims>(token, key, &rules.validation(*algorithm))
            .map_err(|e| unauthorized(e.to_string()))?
            .claims;
        let client_id = claims
            .sub
            .ok_or_else(|| AuthError::Forbidden("token has no `sub` claim".into()))?;
        validate_client_id(&client_id).map_err(|e| AuthError::Forbidden(e.message))?;
        Ok(Identity {
            client_id,
            channels: claims.channels.map(Vec::into_boxed_slice),
            expires_at: claims.exp,
        })
    }
}

fn bearer(authorization: Option<&str>) -> Option<&str> {
    let value = authorization?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The `token` query parameter. JWTs are URL-safe base64 and dots, so no decoding is needed.
fn token_param(query: &str) -> Option<&str> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    fn hs256(secret: &str) -> Authenticator {
        Authenticator::hs256(secret.as_bytes())
    }

    fn token(secret: &str, claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn exp() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600
    }

    #[test]
    fn accepts_valid_tokens_from_header_or_query() {
        let auth = hs256("s3cret");
        let t = token(
            "s3cret",
            serde_json::json!({"sub": "alice", "exp": exp(), "channels": ["news", "room:*"]}),
        );
        let id = auth
            .authenticate(Some(&format!("Bearer {t}")), None)
            .unwrap();
        assert_eq!(id.client_id, "alice");
        assert!(id.may_use("news") && id.may_use("room:1") && !id.may_use("other"));
        let id = auth
            .authenticate(None, Some(&format!("a=b&token={t}")))
            .unwrap();
        assert_eq!(id.client_id, "alice");
    }

    /// Signs with a fixture private key and verifies through `from_config` with the public key.
    fn roundtrip_with_pem(algorithm: JwtAlgorithm, name: &str) {
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let private = std::fs::read(fixtures.join(format!("{name}-private.pem"))).unwrap();
        let (jwt_alg, key) = match algorithm {
            JwtAlgorithm::RS256 => (
                Algorithm::RS256,
                EncodingKey::from_rsa_pem(&private).unwrap(),
            ),
            _ => (
                Algorithm::ES256,
                EncodingKey::from_ec_pem(&private).unwrap(),
            ),
        };
        let token = encode(
            &Header::new(jwt_alg),
            &serde_json::json!({"sub": "carol", "exp": exp()}),
            &key,
        )
        .unwrap();
        let args = crate::config::Args {
            jwt_key_file: Some(fixtures.join(format!("{name}-public.pem"))),
            jwt_algorithm: Some(algorithm),
            ..Default::default()
        };
        let config = Config::resolve(args, |_| None).unwrap();
        let auth = Authenticator::from_config(&config).unwrap();
        let id = auth
            .authenticate(Some(&format!("Bearer {token}")), None)
            .unwrap();
        assert_eq!(id.client_id, "carol");
        // An HS256 token made with the public key as secret must not pass (algorithm confusion).
        let public = std::fs::read(fixtures.join(format!("{name}-public.pem"))).unwrap();
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "eve", "exp": exp()}),
            &EncodingKey::from_secret(&public),
        )
        .unwrap();
        assert!(matches!(
            auth.authenticate(Some(&format!("Bearer {forged}")), None),
            Err(AuthError::Unauthorized(_))
        ));
    }

    #[test]
    fn verifies_rs256_and_es256_with_pem_public_keys() {
        roundtrip_with_pem(JwtAlgorithm::RS256, "rs256");
        roundtrip_with_pem(JwtAlgorithm::ES256, "es256");
    }

    #[test]
    fn refuses_missing_wrong_and_subless_tokens() {
        let auth = hs256("s3cret");
        assert!(matches!(
            auth.authenticate(None, None),
            Err(AuthError::Unauthorized(_))
        ));
        let wrong = token("other", serde_json::json!({"sub": "alice", "exp": exp()}));
        assert!(matches!(
            auth.authenticate(Some(&format!("Bearer {wrong}")), None),
            Err(AuthError::Unauthorized(_))
        ));
        let subless = token("s3cret", serde_json::json!({"exp": exp()}));
        assert!(matches!(
            auth.authenticate(Some(&format!("Bearer {subless}")), None),
            Err(AuthError::Forbidden(_))
        ));
        assert!(matches!(
            auth.authenticate(Some("Bearer not.a.jwt"), None),
            Err(AuthError::Unauthorized(_))
        ));
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn with_kid(secret: &str, kid: Option<&str>, claims: serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = kid.map(str::to_owned);
        encode(
            &header,
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    /// An authenticator from flags, with the key file written into a scratch directory.
    fn configured(key_file: &str, flags: &[&str]) -> Authenticator {
        let dir = std::env::temp_dir().join(format!(
            "wsfleet-auth-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        std::fs::write(&path, key_file).unwrap();
        let mut args = vec!["wsfleet-gateway", "--jwt-key-file", path.to_str().unwrap()];
        args.extend_from_slice(flags);
        let config =
            Config::resolve(crate::config::Args::try_parse_from(args).unwrap(), |_| None).unwrap();
        let auth = Authenticator::from_config(&config).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        auth
    }

    fn verdict(auth: &Authenticator, token: &str) -> Result<String, String> {
        auth.verify(token)
            .map(|id| id.client_id)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn time_claims_are_enforced_with_the_leeway() {
        let auth = configured("s3cret", &["--jwt-leeway-secs", "30"]);
        let t = now();
        let cases = [
            (json!({"sub": "a", "exp": t + 600}), true, "valid"),
            (
                json!({"sub": "a", "exp": t - 10}),
                true,
                "expired within the leeway",
            ),
            (json!({"sub": "a", "exp": t - 120}), false, "expired"),
            (
                json!({"sub": "a", "exp": t + 600, "nbf": t + 10}),
                true,
                "nbf within the leeway",
            ),
            (
                json!({"sub": "a", "exp": t + 600, "nbf": t + 600}),
                false,
                "not yet valid",
            ),
            (json!({"sub": "a"}), false, "no exp"),
        ];
        for (claims, ok, name) in cases {
            let result = verdict(&auth, &token("s3cret", claims));
            assert_eq!(result.is_ok(), ok, "{name}: {result:?}");
        }
        let id = auth
            .verify(&token("s3cret", json!({"sub": "a", "exp": t + 600})))
            .unwrap();
        assert_eq!(id.expires_at, Some(t + 600));
    }

    #[test]
    fn issuer_and_audience_are_checked_when_configured() {
        let auth = configured(
            "s3cret",
            &[
                "--jwt-issuer",
                "https://idp",
                "--jwt-audiences",
                "chat,feed",
            ],
        );
        let exp = now() + 600;
        let cases = [
            (
                json!({"sub": "a", "exp": exp, "iss": "https://idp", "aud": "chat"}),
                true,
            ),
            (
                json!({"sub": "a", "exp": exp, "iss": "https://idp", "aud": ["x", "feed"]}),
                true,
            ),
            (
                json!({"sub": "a", "exp": exp, "iss": "https://evil", "aud": "chat"}),
                false,
            ),
            (
                json!({"sub": "a", "exp": exp, "iss": "https://idp", "aud": "other"}),
                false,
            ),
            (json!({"sub": "a", "exp": exp, "aud": "chat"}), false),
            (json!({"sub": "a", "exp": exp, "iss": "https://idp"}), false),
        ];
        for (claims, ok) in cases {
            let result = verdict(&auth, &token("s3cret", claims.clone()));
            assert_eq!(result.is_ok(), ok, "{claims}: {result:?}");
        }
        // Unconfigured, `aud` in a token is not held against it.
        let open = configured("s3cret", &[]);
        assert!(
            verdict(
                &open,
                &token("s3cret", json!({"sub": "a", "exp": exp, "aud": "x"}))
            )
            .is_ok()
        );
    }

    const JWKS: &str = r#"{"keys": [
        {"kty": "oct", "kid": "k1", "alg": "HS256", "k": "c2VjcmV0LW9uZS0wMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1"},
        {"kty": "oct", "kid": "k2", "alg": "HS256", "k": "c2VjcmV0LXR3by0wMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1"}
    ]}"#;
    const ONE: &str = "secret-one-0123456789abcdef012345";
    const TWO: &str = "secret-two-0123456789abcdef012345";

    #[test]
    fn a_key_set_picks_the_key_by_kid() {
        let auth = configured(JWKS, &[]);
        let claims = json!({"sub": "a", "exp": now() + 600});
        assert!(verdict(&auth, &with_kid(ONE, Some("k1"), claims.clone())).is_ok());
        assert!(verdict(&auth, &with_kid(TWO, Some("k2"), claims.clone())).is_ok());
        let refusals = [
            (with_kid(TWO, Some("k1"), claims.clone()), "signature"),
            (with_kid(ONE, Some("k9"), claims.clone()), "unknown key id"),
            (with_kid(ONE, None, claims.clone()), "no `kid`"),
        ];
        for (token, why) in refusals {
            let err = verdict(&auth, &token).unwrap_err();
            assert!(
                err.to_lowercase().contains(&why.to_lowercase()),
                "{why}: {err}"
            );
        }
    }

    #[test]
    fn bad_key_sets_are_refused_with_the_reason() {
        let cases = [
            (r#"{"keys": []}"#, "no keys"),
            (
                r#"{"keys": [{"kty": "oct", "alg": "HS256", "k": "YQ"}]}"#,
                "kid",
            ),
            (
                r#"{"keys": [{"kty": "oct", "kid": "a", "k": "YQ"}]}"#,
                "alg",
            ),
            (
                r#"{"keys": [{"kty": "oct", "kid": "a", "alg": "HS384", "k": "YQ"}]}"#,
                "alg",
            ),
            (r#"{"keys": "#, "JWKS"),
        ];
        for (text, expected) in cases {
            let err = format!(
                "{:#}",
                Keys::parse(text, JwtAlgorithm::HS256).err().unwrap()
            );
            assert!(err.contains(expected), "{text}: {err}");
        }
    }
}
