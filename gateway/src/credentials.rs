//! The bearer tokens of the node's two HTTP ports, one job each: the **drain** token (held by
//! the operator; `POST`/`DELETE /drain` on the admin port) and the **publish** token (held by
//! app services; `POST /api/v1/publish|send` on the API port). A token file may list several
//! tokens, one per line, so a rotation can keep the previous one valid while publishers move
//! over. Files are re-read while the node runs ([`crate::watched`]), so rotating a mounted
//! Secret needs no restart. Tokens are compared in constant time.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use subtle::ConstantTimeEq;

/// Where a credential's tokens come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// Not configured: every request to the endpoints it guards is refused.
    None,
    /// Given in the environment (development and tests); fixed for the process's life.
    Fixed(String),
    /// A file, re-read while the node runs.
    File(PathBuf),
}

/// The tokens that authorize one kind of request.
pub struct Credential {
    /// What the token is for ("drain", "publish"), in logs and refusals.
    pub scope: &'static str,
    source: TokenSource,
    tokens: RwLock<Arc<[Box<[u8]>]>>,
}

impl Credential {
    /// Reads the tokens now; a configured file that is missing, unreadable or empty is an error,
    /// so a node never starts with a credential it cannot check.
    pub fn load(scope: &'static str, source: TokenSource) -> anyhow::Result<Arc<Credential>> {
        let tokens = match &source {
            TokenSource::None => Arc::from(Vec::new()),
            TokenSource::Fixed(token) => parse_tokens(token)
                .with_context(|| format!("the {scope} token given in the environment"))?,
            TokenSource::File(path) => read_tokens(path)
                .with_context(|| format!("the {scope} token file {}", path.display()))?,
        };
        Ok(Arc::new(Credential {
            scope,
            source,
            tokens: RwLock::new(tokens),
        }))
    }

    /// True when a token is configured at all.
    pub fn configured(&self) -> bool {
        self.tokens.read().map(|t| !t.is_empty()).unwrap_or(false)
    }

    /// Whether `presented` is one of the tokens. Every token is compared, each in constant
    /// time, so the answer's timing says nothing about how much of a token matched.
    pub fn accepts(&self, presented: &str) -> bool {
        let Ok(tokens) = self.tokens.read() else {
            return false;
        };
        let mut matched = subtle::Choice::from(0);
        for token in tokens.iter() {
            matched |= token.as_ref().ct_eq(presented.as_bytes());
        }
        bool::from(matched)
    }

    /// Re-reads the token file while the process runs (see [`crate::watched`]).
    pub fn reload_forever(self: Arc<Self>) {
        let TokenSource::File(path) = self.source.clone() else {
            return;
        };
        crate::watched::reload_forever(self.scope, path, parse_tokens, move |tokens| {
            self.replace(tokens)
        });
    }

    fn replace(&self, tokens: Arc<[Box<[u8]>]>) {
        let Ok(mut current) = self.tokens.write() else {
            return;
        };
        if *current != tokens {
            tracing::info!(
                scope = self.scope,
                tokens = tokens.len(),
                "token file changed; new tokens in force"
            );
            *current = tokens;
        }
    }
}

fn read_tokens(path: &Path) -> anyhow::Result<Arc<[Box<[u8]>]>> {
    let text = std::fs::read_to_string(path).context("reading")?;
    parse_tokens(&text)
}

/// One token per line; blank lines and surrounding whitespace (a trailing newline from `echo`)
/// are not part of any token.
fn parse_tokens(text: &str) -> anyhow::Result<Arc<[Box<[u8]>]>> {
    let tokens: Vec<Box<[u8]>> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| line.as_bytes().into())
        .collect();
    if tokens.is_empty() {
        bail!("no token in it");
    }
    Ok(tokens.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_listed_token_is_accepted_and_nothing_else() {
        let credential =
            Credential::load("publish", TokenSource::Fixed("new\n  old  \n\n".into())).unwrap();
        assert!(credential.accepts("new") && credential.accepts("old"));
        for wrong in ["", "ne", "new ", "newer", "old\n", "NEW"] {
            assert!(!credential.accepts(wrong), "{wrong:?}");
        }
        let none = Credential::load("drain", TokenSource::None).unwrap();
        assert!(!none.configured() && !none.accepts(""));
    }

    #[test]
    fn unusable_files_are_errors_at_start() {
        let dir = std::env::temp_dir().join(format!("wsfleet-cred-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty");
        std::fs::write(&empty, "\n \n").unwrap();
        for path in [empty, dir.join("missing")] {
            let err = Credential::load("drain", TokenSource::File(path))
                .err()
                .unwrap();
            assert!(format!("{err:#}").contains("drain token file"), "{err:#}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    use crate::watched::RELOAD_INTERVAL;

    #[tokio::test(start_paused = true)]
    async fn a_changed_file_is_picked_up_and_a_broken_one_keeps_the_old_tokens() {
        let dir = std::env::temp_dir().join(format!("wsfleet-cred-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokens");
        std::fs::write(&path, "first\n").unwrap();
        let credential = Credential::load("publish", TokenSource::File(path.clone())).unwrap();
        Arc::clone(&credential).reload_forever();
        std::fs::write(&path, "second\nfirst\n").unwrap();
        tokio::time::sleep(RELOAD_INTERVAL * 2).await;
        assert!(credential.accepts("second") && credential.accepts("first"));
        std::fs::write(&path, "").unwrap();
        tokio::time::sleep(RELOAD_INTERVAL * 2).await;
        assert!(
            credential.accepts("second"),
            "an emptied file keeps the old tokens"
        );
        std::fs::write(&path, "third").unwrap();
        tokio::time::sleep(RELOAD_INTERVAL * 2).await;
        assert!(credential.accepts("third") && !credential.accepts("first"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
