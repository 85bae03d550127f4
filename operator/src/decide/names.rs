//! Names of new gateway pods: `<fleet>-<revision>-<suffix>`. The suffix source is an input so
//! decisions stay deterministic under test.

use rand::Rng;

/// Characters Kubernetes uses for generated name suffixes (no vowels, no look-alikes).
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
/// Length of a generated suffix.
pub const SUFFIX_LEN: usize = 5;

/// Where name suffixes come from.
pub trait NameSource {
    /// A fresh suffix of [`SUFFIX_LEN`] characters from [`ALPHABET`].
    fn suffix(&mut self) -> String;
}

/// Random suffixes for production use.
#[derive(Debug, Default)]
pub struct RandomNames;

impl NameSource for RandomNames {
    fn suffix(&mut self) -> String {
        let mut rng = rand::rng();
        (0..SUFFIX_LEN)
            .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
            .collect()
    }
}

/// A pod name for `fleet` at `revision`.
pub fn pod_name(fleet: &str, revision: &str, suffix: &str) -> String {
    format!("{fleet}-{revision}-{suffix}")
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Suffixes `00000`, `00001`, … in order.
    #[derive(Debug, Default)]
    pub struct CountingNames(pub u32);

    impl NameSource for CountingNames {
        fn suffix(&mut self) -> String {
            let s = format!("{:05}", self.0);
            self.0 += 1;
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_suffixes_use_the_alphabet() {
        let s = RandomNames.suffix();
        assert_eq!(s.len(), SUFFIX_LEN);
        assert!(s.bytes().all(|b| ALPHABET.contains(&b)), "{s}");
        assert_eq!(pod_name("chat", "ab12", "xyz98"), "chat-ab12-xyz98");
    }
}
