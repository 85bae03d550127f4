//! The fleet's two bearer tokens, one job each, in Secrets the operator creates:
//!
//! - the **drain** token (`<fleet>-drain-token`, key `token`): the operator's, for
//!   `POST`/`DELETE /drain` on each node's admin port. Generated once and never rotated by
//!   reconcile: the operator itself is its only holder.
//! - the **publish** token (`<fleet>-publish-token`): app services mount key `token` to call
//!   the publish API; the nodes mount key `tokens`, every token they accept, one per line.
//!   A rotation (the fleet's `wsfleet.io/rotate-publish-token` annotation takes a new value)
//!   writes a new `token` and keeps the previous one in `tokens` until the overlap ends, so a
//!   publisher that has not re-read its mount yet is not refused. An edited `token` (bring your
//!   own) reaches `tokens` on the next reconcile.
//!
//! Both are mounted as files, which the nodes re-read, so neither rotation restarts a pod.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use rand::RngCore;

use super::{ROTATE_PUBLISH_TOKEN_ANNOTATION, drain_secret_name, owned_meta, publish_secret_name};
use crate::crd::WebSocketFleet;

/// Key of the token inside either Secret (what its holder presents).
pub const TOKEN_KEY: &str = "token";
/// Key of the publish Secret listing every token the nodes accept, one per line.
pub const ACCEPTED_KEY: &str = "tokens";
/// Publish Secret annotation: the rotation request (the fleet annotation's value) last done.
pub const ROTATED_FOR_ANNOTATION: &str = "wsfleet.io/rotated-for";
/// Publish Secret annotation: when the previous token stops being accepted (RFC 3339).
pub const PREVIOUS_UNTIL_ANNOTATION: &str = "wsfleet.io/previous-valid-until";

/// A new random token: 32 bytes from the OS-seeded CSPRNG, hex-encoded.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The drain-token Secret holding `token`.
pub fn drain_token_secret(fleet: &WebSocketFleet, token: &str) -> Secret {
    Secret {
        metadata: owned_meta(fleet, drain_secret_name(fleet)),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(TOKEN_KEY.to_string(), bytes(token))])),
        ..Secret::default()
    }
}

/// The token in a Secret: non-empty UTF-8 (surrounding whitespace, e.g. a trailing newline
/// from `kubectl create secret --from-file`, is not part of it).
pub fn token(secret: &Secret) -> Option<String> {
    value(secret, TOKEN_KEY)
        .map(|v| v.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// What a reconcile writes to the publish Secret, if anything.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishTokenWrite {
    pub secret: Secret,
    /// True when the write is a rotation (worth an event).
    pub rotated: bool,
}

/// The publish Secret as it should be now, given the one that `existing` is (if any), or
/// `None` when it is right as it is. `fresh` makes a token when one is needed.
pub fn publish_token_write(
    fleet: &WebSocketFleet,
    existing: Option<&Secret>,
    now: Timestamp,
    fresh: impl FnOnce() -> String,
) -> Option<PublishTokenWrite> {
    let requested = fleet
        .annotations()
        .get(ROTATE_PUBLISH_TOKEN_ANNOTATION)
        .cloned();
    let Some((existing, current)) = existing.and_then(|s| token(s).map(|t| (s, t))) else {
        // New (or unusable): a fresh token; a rotation asked for before it existed is done.
        let token = fresh();
        return Some(PublishTokenWrite {
            secret: publish_token_secret(fleet, &token, None, requested.as_deref()),
            rotated: false,
        });
    };
    let done = existing.annotations().get(ROTATED_FOR_ANNOTATION).cloned();
    if requested.is_some() && requested != done {
        let overlap =
            SignedDuration::from_secs(fleet.spec.publish_token.rotation_overlap_seconds.into());
        let previous = (!overlap.is_zero())
            .then(|| (current.as_str(), now.saturating_add(overlap).unwrap_or(now)));
        let token = fresh();
        return Some(PublishTokenWrite {
            secret: publish_token_secret(fleet, &token, previous, requested.as_deref()),
            rotated: true,
        });
    }
    // The previous token while its overlap lasts: the second line of `tokens`.
    let until = existing
        .annotations()
        .get(PREVIOUS_UNTIL_ANNOTATION)
        .and_then(|t| t.parse::<Timestamp>().ok())
        .filter(|until| now < *until);
    let accepted = value(existing, ACCEPTED_KEY).unwrap_or_default();
    let mut lines = accepted.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next();
    let previous = until.and_then(|until| lines.next().map(|p| (p, until)));
    let expected = publish_token_secret(fleet, &current, previous, done.as_deref());
    let up_to_date = first == Some(current.as_str())
        && value(existing, ACCEPTED_KEY) == value(&expected, ACCEPTED_KEY)
        && existing.annotations().get(PREVIOUS_UNTIL_ANNOTATION)
            == expected.annotations().get(PREVIOUS_UNTIL_ANNOTATION);
    (!up_to_date).then_some(PublishTokenWrite {
        secret: expected,
        rotated: false,
    })
}

/// How long until the publish Secret next needs a write by itself (its overlap ends).
pub fn publish_token_due(secret: &Secret, now: Timestamp) -> Option<std::time::Duration> {
    let until = secret
        .annotations()
        .get(PREVIOUS_UNTIL_ANNOTATION)?
        .parse::<Timestamp>()
        .ok()?;
    let left = until.duration_since(now);
    Some(std::time::Duration::try_from(left).unwrap_or_default())
}

/// The publish Secret with `token`, and `previous` accepted until its time.
fn publish_token_secret(
    fleet: &WebSocketFleet,
    token: &str,
    previous: Option<(&str, Timestamp)>,
    rotated_for: Option<&str>,
) -> Secret {
    let mut metadata = owned_meta(fleet, publish_secret_name(fleet));
    let mut annotations = BTreeMap::new();
    if let Some(request) = rotated_for {
        annotations.insert(ROTATED_FOR_ANNOTATION.to_string(), request.to_string());
    }
    let mut accepted = format!("{token}\n");
    if let Some((previous, until)) = previous {
        accepted.push_str(previous);
        accepted.push('\n');
        annotations.insert(PREVIOUS_UNTIL_ANNOTATION.to_string(), until.to_string());
    }
    metadata.annotations = (!annotations.is_empty()).then_some(annotations);
    Secret {
        metadata,
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([
            (TOKEN_KEY.to_string(), bytes(token)),
            (ACCEPTED_KEY.to_string(), bytes(&accepted)),
        ])),
        ..Secret::default()
    }
}

fn bytes(text: &str) -> ByteString {
    ByteString(text.as_bytes().to_vec())
}

/// A key's UTF-8 text from `data` or `stringData`.
fn value(secret: &Secret, key: &str) -> Option<String> {
    let in_data = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|v| std::str::from_utf8(&v.0).ok())
        .map(str::to_string);
    in_data.or_else(|| {
        secret
            .string_data
            .as_ref()
            .and_then(|d| d.get(key))
            .cloned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::testing;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).expect("time")
    }

    fn accepted(secret: &Secret) -> Vec<String> {
        value(secret, ACCEPTED_KEY)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn fleet(rotate: Option<&str>, overlap: i32) -> WebSocketFleet {
        let mut fleet = testing::fleet(serde_json::json!({
            "image": "gw:1", "auth": {"anonymous": true},
            "publishToken": {"rotationOverlapSeconds": overlap}
        }));
        if let Some(value) = rotate {
            fleet
                .annotations_mut()
                .insert(ROTATE_PUBLISH_TOKEN_ANNOTATION.into(), value.into());
        }
        fleet
    }

    #[test]
    fn tokens_are_long_and_distinct() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn drain_secret_carries_the_token_and_is_recognised() {
        let secret = drain_token_secret(&testing::minimal(), "abc");
        assert_eq!(secret.metadata.name.as_deref(), Some("chat-drain-token"));
        assert_eq!(token(&secret).as_deref(), Some("abc"));
        let written_as_string = Secret {
            string_data: Some(BTreeMap::from([(TOKEN_KEY.into(), " abc\n".into())])),
            ..Secret::default()
        };
        assert_eq!(token(&written_as_string).as_deref(), Some("abc"));
        assert_eq!(token(&Secret::default()), None);
    }

    /// (what exists, the fleet's request, now) → the tokens the nodes accept afterwards and
    /// whether it was a rotation; `None` = no write.
    #[test]
    fn publish_token_lifecycle() {
        let fresh = || "new".to_string();
        // Created: one token, accepted alone; a request made before it existed counts as done.
        let created =
            publish_token_write(&fleet(Some("r1"), 60), None, at(0), fresh).expect("create");
        assert!(!created.rotated);
        assert_eq!(
            created.secret.metadata.name.as_deref(),
            Some("chat-publish-token")
        );
        assert_eq!(token(&created.secret).as_deref(), Some("new"));
        assert_eq!(accepted(&created.secret), ["new"]);
        let created = created.secret;
        assert_eq!(
            publish_token_write(&fleet(Some("r1"), 60), Some(&created), at(1), fresh),
            None
        );

        // Rotated: the new token first, the previous one accepted until now + overlap.
        let rotated = publish_token_write(&fleet(Some("r2"), 60), Some(&created), at(10), || {
            "second".into()
        })
        .expect("rotate");
        assert!(rotated.rotated);
        let rotated = rotated.secret;
        assert_eq!(token(&rotated).as_deref(), Some("second"));
        assert_eq!(accepted(&rotated), ["second", "new"]);
        assert_eq!(
            publish_token_due(&rotated, at(10)),
            Some(std::time::Duration::from_secs(60))
        );
        // Within the overlap nothing changes; at its end the previous token goes.
        assert_eq!(
            publish_token_write(&fleet(Some("r2"), 60), Some(&rotated), at(69), fresh),
            None
        );
        let expired = publish_token_write(&fleet(Some("r2"), 60), Some(&rotated), at(70), fresh)
            .expect("overlap over");
        assert!(!expired.rotated);
        assert_eq!(accepted(&expired.secret), ["second"]);
        assert_eq!(publish_token_due(&expired.secret, at(70)), None);

        // No overlap: the previous token is refused at once.
        let sharp = publish_token_write(&fleet(Some("r3"), 0), Some(&created), at(10), || {
            "third".into()
        })
        .expect("rotate");
        assert_eq!(accepted(&sharp.secret), ["third"]);

        // A token written by hand (or an emptied Secret) is taken up / replaced.
        let mut edited = created.clone();
        edited
            .data
            .as_mut()
            .expect("data")
            .insert(TOKEN_KEY.into(), bytes("mine\n"));
        let taken = publish_token_write(&fleet(Some("r1"), 60), Some(&edited), at(5), fresh)
            .expect("take up");
        assert_eq!(accepted(&taken.secret), ["mine"]);
        assert_eq!(token(&taken.secret).as_deref(), Some("mine"));
        let emptied = Secret {
            data: None,
            ..created.clone()
        };
        let refilled =
            publish_token_write(&fleet(None, 60), Some(&emptied), at(5), fresh).expect("refill");
        assert_eq!(accepted(&refilled.secret), ["new"]);
    }
}
