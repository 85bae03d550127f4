//! Tokens that outlive their JWTs: the application's token callback ([`TokenSource`]), asked
//! for a fresh token at every (re)connect and ahead of each expiry, and the socket-free rules
//! for when a live connection refreshes its token and retries a failed refresh.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// A refresh is due once the token's remaining lifetime has fallen to this margin (or to half
/// of the lifetime left when its expiry was learned, whichever is shorter).
pub const REFRESH_MARGIN: Duration = Duration::from_secs(30);

/// What a token callback returns: a JWT, or why none could be had.
pub type TokenResult = Result<String, Box<dyn std::error::Error + Send + Sync>>;

type Fetch = dyn Fn() -> Pin<Box<dyn Future<Output = TokenResult> + Send>> + Send + Sync;

/// The application's source of fresh tokens, e.g. a call to its identity provider. Cheap to
/// clone; called once per connection attempt and once per refresh (retries included).
#[derive(Clone)]
pub struct TokenSource(Arc<Fetch>);

impl TokenSource {
    /// Wraps an async closure: `TokenSource::new(|| async { Ok::<_, MyError>(mint()) })`.
    pub fn new<F, Fut, E>(fetch: F) -> TokenSource
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        TokenSource(Arc::new(move || {
            let fetched = fetch();
            Box::pin(async move { fetched.await.map_err(Into::into) })
        }))
    }

    /// A fresh token; the error is the callback's, as text for events and attempt reasons.
    pub(crate) fn fetch(&self) -> impl Future<Output = Result<String, String>> + Send + use<> {
        let fetched = (self.0)();
        async move {
            fetched
                .await
                .map_err(|e| format!("token callback failed: {e}"))
        }
    }
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSource(..)")
    }
}

/// How long after `now_ms` to refresh a token that expires at `expires_at_ms` (both ms since
/// the Unix epoch): when the lifetime left is `min(REFRESH_MARGIN, half of it now)`. A one-hour
/// token is refreshed 30 s before its expiry, a 3 s token after 1.5 s; an expired one at once.
pub fn refresh_in(now_ms: u64, expires_at_ms: u64) -> Duration {
    let left = Duration::from_millis(expires_at_ms.saturating_sub(now_ms));
    left - REFRESH_MARGIN.min(left / 2)
}

/// The wait before retrying a failed refresh, given the backoff's drawn `delay`: never past
/// the expiry (the last try lands on it, while the gateway's leeway still holds the
/// connection). `None` once the token has expired: the gateway will close with 4001 and the
/// client reconnects with a token from the callback.
pub fn retry_in(delay: Duration, now_ms: u64, expires_at_ms: u64) -> Option<Duration> {
    let left = expires_at_ms.checked_sub(now_ms).filter(|&ms| ms > 0)?;
    Some(delay.min(Duration::from_millis(left)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1000;

    #[test]
    fn refresh_is_due_at_the_margin_or_halfway() {
        let now = 1_700_000_000 * S;
        let ms = Duration::from_millis;
        let cases = [
            // (lifetime left, refresh after)
            (3600 * S, ms(3570 * S)),
            (60 * S, ms(30 * S)),
            (59 * S, ms(29_500)),
            (3 * S, ms(1500)),
            (2, ms(1)),
            (0, ms(0)),
        ];
        for (left, after) in cases {
            assert_eq!(refresh_in(now, now + left), after, "{left} ms left");
        }
        assert_eq!(
            refresh_in(now, now - 5 * S),
            Duration::ZERO,
            "already expired"
        );
    }

    #[test]
    fn retries_stop_at_the_expiry() {
        let now = 1_700_000_000 * S;
        let ms = Duration::from_millis;
        let cases = [
            // (drawn delay, lifetime left, retry after)
            (ms(200), Some(10 * S), Some(ms(200))),
            (ms(5000), Some(2 * S), Some(ms(2 * S))),
            (ms(0), Some(1), Some(ms(0))),
            (ms(200), Some(0), None),
            (ms(200), None, None),
        ];
        for (delay, left, expected) in cases {
            let expires_at = left.map_or(now - S, |left| now + left);
            assert_eq!(retry_in(delay, now, expires_at), expected, "{left:?} left");
        }
    }

    #[tokio::test]
    async fn callback_errors_are_reported_as_text() {
        let failing = TokenSource::new(|| async { Err::<String, _>("idp down") });
        assert_eq!(
            failing.fetch().await,
            Err("token callback failed: idp down".into())
        );
        let minting = TokenSource::new(|| async { Ok::<_, std::io::Error>("jwt".into()) });
        assert_eq!(minting.fetch().await, Ok("jwt".into()));
    }
}
