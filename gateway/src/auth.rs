//! Client authentication at upgrade time: a JWT (HS256, RS256 or ES256) from
//! `Authorization: Bearer` or `?token=`, whose `sub` becomes the client id and whose optional
//! `channels` claim limits what the client may subscribe and publish to. Anonymous mode gives
//! every client a random id and no limits (development only).

use crate::config::{Config, JwtAlgorithm, read_secret};
use crate::protocol::validate_client_id;
use anyhow::Context;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// Who a connection belongs to and what it may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub client_id: String,
    /// Allowed channel patterns (exact names, or a prefix ending in `*`); `None` = any.
    pub channels: Option<Box<[String]>>,
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

/// Why an upgrade was refused before it happened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No token, or one that does not verify: HTTP 401.
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
}

/// Verifies client tokens.
pub enum Authenticator {
    Anonymous,
    Jwt {
        key: Box<DecodingKey>,
        validation: Box<Validation>,
    },
}

impl Authenticator {
    /// Builds the authenticator the config asks for, reading the key file.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        if config.anonymous {
            return Ok(Authenticator::Anonymous);
        }
        let path = &config.jwt_key_file;
        let (key, algorithm) = match config.jwt_algorithm {
            JwtAlgorithm::HS256 => (
                DecodingKey::from_secret(read_secret(path)?.as_bytes()),
                Algorithm::HS256,
            ),
            JwtAlgorithm::RS256 => (
                DecodingKey::from_rsa_pem(read_secret(path)?.as_bytes())
                    .with_context(|| format!("RSA public key in {}", path.display()))?,
                Algorithm::RS256,
            ),
            JwtAlgorithm::ES256 => (
                DecodingKey::from_ec_pem(read_secret(path)?.as_bytes())
                    .with_context(|| format!("EC public key in {}", path.display()))?,
                Algorithm::ES256,
            ),
        };
        Ok(Authenticator::Jwt {
            key: Box::new(key),
            validation: Box::new(Validation::new(algorithm)),
        })
    }

    /// An HS256 authenticator with the given secret (tests and fuzzing).
    pub fn hs256(secret: &[u8]) -> Self {
        Authenticator::Jwt {
            key: Box::new(DecodingKey::from_secret(secret)),
            validation: Box::new(Validation::new(Algorithm::HS256)),
        }
    }

    /// Authenticates an upgrade request from its `Authorization` header and query string.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        query: Option<&str>,
    ) -> Result<Identity, AuthError> {
        let Authenticator::Jwt { key, validation } = self else {
            return Ok(Identity {
                client_id: format!("anon-{:016x}", rand::random::<u64>()),
                channels: None,
            });
        };
        let token = bearer(authorization)
            .or_else(|| query.and_then(token_param))
            .ok_or_else(|| AuthError::Unauthorized("missing token".into()))?;
        let claims = jsonwebtoken::decode::<Claims>(token, key, validation)
            .map_err(|err| AuthError::Unauthorized(format!("invalid token: {err}")))?
            .claims;
        let client_id = claims
            .sub
            .ok_or_else(|| AuthError::Forbidden("token has no `sub` claim".into()))?;
        validate_client_id(&client_id).map_err(|e| AuthError::Forbidden(e.message))?;
        Ok(Identity {
            client_id,
            channels: claims.channels.map(Vec::into_boxed_slice),
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
    use jsonwebtoken::{EncodingKey, Header, encode};

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
}
