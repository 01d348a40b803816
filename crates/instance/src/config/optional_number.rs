//! Serde for optional numbers that also come from `--set` and the environment: the layering
//! coerces a value to the type of its default, and an unset option's default (null) has no
//! type, so `--set bootstrap.initdb.wal_segment_size_mb=64` arrives as the string "64". Both
//! a YAML number and such a string are accepted; anything else is refused with the text.

use std::fmt::Display;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrText<T> {
    Number(T),
    Text(String),
}

pub fn deserialize<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + FromStr,
    T::Err: Display,
{
    match Option::<NumberOrText<T>>::deserialize(deserializer)? {
        None => Ok(None),
        Some(NumberOrText::Number(n)) => Ok(Some(n)),
        Some(NumberOrText::Text(text)) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a number: {e}"))),
    }
}

pub fn serialize<S, T>(value: &Option<T>, serializer: S) -> Result<S::Ok, S::Error>
where
    S: Serializer,
    T: Serialize,
{
    value.serialize(serializer)
}

#[cfg(test)]
mod tests {
    #[derive(Debug, serde::Deserialize, serde::Serialize, PartialEq)]
    struct Holder {
        #[serde(default, with = "super")]
        n: Option<u32>,
    }

    fn parse(yaml: &str) -> Result<Holder, String> {
        serde_yaml::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn numbers_and_numeric_text_are_accepted() {
        assert_eq!(parse("n: 64"), Ok(Holder { n: Some(64) }));
        assert_eq!(parse("n: '64'"), Ok(Holder { n: Some(64) }));
        assert_eq!(parse("n: null"), Ok(Holder { n: None }));
        assert_eq!(parse("{}"), Ok(Holder { n: None }));
        let error = parse("n: sixty").err().unwrap_or_default();
        assert!(error.contains("\"sixty\" is not a number"), "{error}");
        assert!(parse("n: '-1'").is_err());
        assert_eq!(
            serde_yaml::to_string(&Holder { n: Some(8) })
                .ok()
                .as_deref(),
            Some("n: 8\n")
        );
    }
}
