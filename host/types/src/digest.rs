//! [`Digest`]: a plugin's identity, the sha256 of its component bytes.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use sha2::Sha256;

/// Length of a digest's text: 64 lower-case hex digits.
const HEX_LEN: usize = 64;

/// A plugin's identity: the sha256 of its component bytes, as 64 lower-case hex digits (what
/// `sha256sum` prints). Cheap to clone. Only [`Digest::of`] and [`Digest::parse`] make one, so
/// a `Digest` is always well formed (it names files of the precompiled cache).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(Arc<str>);

/// Text that is not a [`Digest`]; says where it came from when told ([`DigestError::in_field`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestError {
    /// The field the text was read from, e.g. `status.operation.pluginDigest`.
    field: Option<&'static str>,
    /// The text, cut to its first 100 characters.
    text: String,
}

impl Digest {
    /// The digest of a component's bytes.
    pub fn of(bytes: &[u8]) -> Self {
        use sha2::Digest as _;
        let hash = Sha256::digest(bytes);
        let mut text = String::with_capacity(HEX_LEN);
        for byte in hash {
            text.push(hex_digit(byte >> 4));
            text.push(hex_digit(byte & 0x0f));
        }
        Self(text.into())
    }

    /// A digest from text (a status field, a file name, a flag): 64 lower-case hex digits,
    /// nothing else.
    pub fn parse(text: &str) -> Result<Self, DigestError> {
        let well_formed = text.len() == HEX_LEN
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if well_formed {
            Ok(Self(text.into()))
        } else {
            Err(DigestError {
                field: None,
                text: text.chars().take(100).collect(),
            })
        }
    }

    /// The 64 hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 hex digits, enough to tell plugins apart in logs, events and metrics.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

fn hex_digit(nibble: u8) -> char {
    char::from(b"0123456789abcdef"[usize::from(nibble & 0x0f)])
}

impl DigestError {
    /// The same error, naming the field the text was read from.
    #[must_use]
    pub fn in_field(self, field: &'static str) -> Self {
        Self {
            field: Some(field),
            ..self
        }
    }
}

impl fmt::Display for DigestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(field) = self.field {
            write!(f, "{field}: ")?;
        }
        write!(
            f,
            "{:?} is not a plugin digest (64 lower-case hex digits of a sha256)",
            self.text
        )
    }
}

impl std::error::Error for DigestError {}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl AsRef<str> for Digest {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::Digest;

    #[test]
    fn the_digest_of_bytes_is_their_sha256_in_lower_case_hex() {
        // sha256("") and sha256("abc"), as sha256sum prints them.
        assert_eq!(
            Digest::of(b"").as_str(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let abc = Digest::of(b"abc");
        assert_eq!(
            abc.to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(abc.short(), "ba7816bf8f01");
        assert_eq!(Digest::parse(abc.as_str()), Ok(abc));
    }

    #[test]
    fn only_lower_case_sha256_hex_is_a_digest() {
        let good = "be8bdfd09032".repeat(5) + "0123";
        assert!(Digest::parse(&good).is_ok());
        let escape = format!("../../{}", &good[6..]);
        for bad in [
            String::new(),
            good.to_uppercase(),
            good[..63].to_owned(),
            format!("{good}0"),
            format!("sha256:{}", &good[7..]),
            escape,
            "é".repeat(32),
        ] {
            assert!(Digest::parse(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_bad_digest_names_its_field_and_cuts_its_text() {
        let err = Digest::parse("abc")
            .unwrap_err()
            .in_field("status.operation.pluginDigest");
        assert_eq!(
            err.to_string(),
            "status.operation.pluginDigest: \"abc\" is not a plugin digest (64 lower-case hex digits of a sha256)"
        );
        let long = Digest::parse(&"x".repeat(1000)).unwrap_err().to_string();
        assert!(long.len() < 200, "{long}");
    }
}
