//! The backplane's error type: Redis being unreachable is an expected, recoverable condition,
//! so every failure is reported as a value and none of them panics.

use std::fmt;

#[derive(Debug, Clone)]
pub enum BackplaneError {
    /// No usable Redis connection right now; the backplane keeps reconnecting in the background.
    Unavailable,
    /// Redis answered with an error or the connection failed during the request.
    Redis(redis::RedisError),
    /// Redis answered something this backplane did not write (e.g. a foreign value under one of
    /// its keys).
    UnexpectedReply(String),
    /// The configuration cannot work (e.g. an unparsable URL).
    InvalidConfig(String),
}

impl fmt::Display for BackplaneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unavailable => write!(f, "redis backplane unavailable"),
            Self::Redis(error) => write!(f, "redis error: {error}"),
            Self::UnexpectedReply(detail) => write!(f, "unexpected redis reply: {detail}"),
            Self::InvalidConfig(detail) => write!(f, "invalid backplane configuration: {detail}"),
        }
    }
}

impl std::error::Error for BackplaneError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Redis(error) => Some(error),
            _ => None,
        }
    }
}

impl From<redis::RedisError> for BackplaneError {
    fn from(error: redis::RedisError) -> Self {
        Self::Redis(error)
    }
}
