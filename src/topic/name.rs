//! Topic names: 1-249 characters of `[A-Za-z0-9._-]`, as in Kafka, and never `.` or `..` (a
//! name is a directory name on disk).

use std::fmt;

/// The topic every original `log.v1` call and every request naming no topic addresses.
pub const DEFAULT_TOPIC: &str = "default";

/// Longest topic name, in characters (bytes: the alphabet is ASCII).
pub const TOPIC_NAME_CHARS_MAX: usize = 249;

/// A valid topic name.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct TopicName(String);

/// Why a string is not a topic name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicNameError {
    #[error("a topic name cannot be empty")]
    Empty,
    #[error("topic name of {len} characters: the limit is {TOPIC_NAME_CHARS_MAX}")]
    TooLong { len: usize },
    #[error(
        "topic name {name:?} has {bad:?}: only ASCII letters, digits, '.', '_' and '-' are allowed"
    )]
    BadCharacter { name: String, bad: char },
    #[error("{0:?} cannot be a topic name")]
    Reserved(String),
}

impl TopicName {
    pub fn new(name: &str) -> Result<TopicName, TopicNameError> {
        if name.is_empty() {
            return Err(TopicNameError::Empty);
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(TopicNameError::BadCharacter {
                name: name.chars().take(64).collect(),
                bad,
            });
        }
        if name.len() > TOPIC_NAME_CHARS_MAX {
            return Err(TopicNameError::TooLong { len: name.len() });
        }
        if name == "." || name == ".." {
            return Err(TopicNameError::Reserved(name.to_owned()));
        }
        Ok(TopicName(name.to_owned()))
    }

    /// The name a request gives, where "" means the default topic.
    pub fn from_request(name: &str) -> Result<TopicName, TopicNameError> {
        if name.is_empty() {
            Ok(TopicName::default_topic())
        } else {
            TopicName::new(name)
        }
    }

    pub fn default_topic() -> TopicName {
        TopicName(DEFAULT_TOPIC.to_owned())
    }

    pub fn is_default(&self) -> bool {
        self.0 == DEFAULT_TOPIC
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for TopicName {
    type Error = TopicNameError;
    fn try_from(name: String) -> Result<Self, Self::Error> {
        TopicName::new(&name)
    }
}

impl From<TopicName> for String {
    fn from(name: TopicName) -> String {
        name.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kafkas_alphabet_and_length() {
        for good in ["a", "orders", "Orders.v2", "a_b-c", "...", &"x".repeat(249)] {
            assert!(TopicName::new(good).is_ok(), "{good}");
        }
        assert_eq!(TopicName::new(""), Err(TopicNameError::Empty));
        assert_eq!(
            TopicName::new(&"x".repeat(250)),
            Err(TopicNameError::TooLong { len: 250 })
        );
        for bad in ["a b", "a/b", "é", "a*", "a\0"] {
            assert!(
                matches!(
                    TopicName::new(bad),
                    Err(TopicNameError::BadCharacter { .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            TopicName::new(".."),
            Err(TopicNameError::Reserved(_))
        ));
        assert!(matches!(
            TopicName::new("."),
            Err(TopicNameError::Reserved(_))
        ));
    }

    #[test]
    fn an_empty_request_name_is_the_default_topic() {
        assert!(TopicName::from_request("").unwrap().is_default());
        assert_eq!(TopicName::from_request("t").unwrap().as_str(), "t");
        assert!(TopicName::from_request(" ").is_err());
    }
}
