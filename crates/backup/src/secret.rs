//! A secret string (an S3 secret key): carried and serialized as itself, never shown
//! by `Debug`, so no log line or error that prints a struct holding one leaks it.

use serde::{Deserialize, Serialize};

/// A secret; [`Secret::expose`] is the only way to read it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(secret: String) -> Secret {
        Secret(secret)
    }
}

impl From<&str> for Secret {
    fn from(secret: &str) -> Secret {
        Secret(secret.to_string())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("(hidden)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_it_and_json_carries_it() {
        let secret = Secret::from("s3cr3t");
        assert_eq!(format!("{secret:?}"), "(hidden)");
        assert_eq!(format!("{:?}", Some(secret.clone())), "Some((hidden))");
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"s3cr3t\"");
        let back: Secret = serde_json::from_str("\"s3cr3t\"").unwrap();
        assert_eq!(back.expose(), "s3cr3t");
    }
}
