//! Strict JSON for token headers and claims: a `serde_json::Value` parser that rejects duplicate
//! member names at any depth (RFC 8725 §2.6: two parsers must not see two different tokens).
//! `serde_json` itself keeps the last duplicate silently. Invalid UTF-8, trailing data and nesting
//! deeper than serde_json's recursion limit (128) are rejected by serde_json.

use std::fmt;

use serde::{
    Deserialize, Deserializer,
    de::{self, MapAccess, SeqAccess, Visitor},
};
use serde_json::{Map, Number, Value};

/// Parse failure: either plain bad JSON or a repeated member name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StrictError {
    /// Not valid JSON (syntax, UTF-8, trailing data, too deep).
    Syntax,
    /// An object repeats a member name.
    Duplicate,
}

const DUPLICATE: &str = "duplicate member name";

/// Parses `bytes` as a JSON object, rejecting duplicate member names anywhere inside it.
pub(crate) fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, StrictError> {
    match serde_json::from_slice::<StrictValue>(bytes) {
        Ok(StrictValue(Value::Object(map))) => Ok(map),
        Ok(_) => Err(StrictError::Syntax),
        Err(e) if e.to_string().starts_with(DUPLICATE) => Err(StrictError::Duplicate),
        Err(_) => Err(StrictError::Syntax),
    }
}

struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let StrictValue(value) = access.next_value()?;
            if map.insert(key, value).is_some() {
                return Err(de::Error::custom(DUPLICATE));
            }
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_top_level_member_is_rejected() {
        assert_eq!(parse_object(br#"{"sub":"a","sub":"b"}"#), Err(StrictError::Duplicate));
    }

    #[test]
    fn duplicate_nested_member_is_rejected() {
        assert_eq!(parse_object(br#"{"x":[{"a":1,"a":2}]}"#), Err(StrictError::Duplicate));
    }

    #[test]
    fn escaped_duplicate_member_is_rejected() {
        assert_eq!(parse_object(br#"{"sub":"a","s\u0075b":"b"}"#), Err(StrictError::Duplicate));
    }

    #[test]
    fn non_object_trailing_data_and_invalid_utf8_are_syntax_errors() {
        assert_eq!(parse_object(b"[1]"), Err(StrictError::Syntax));
        assert_eq!(parse_object(br#"{"a":1} x"#), Err(StrictError::Syntax));
        assert_eq!(parse_object(b"{\"a\":\"\xff\"}"), Err(StrictError::Syntax));
    }

    #[test]
    fn ordinary_object_round_trips() {
        let map = parse_object(br#"{"a":1,"b":[true,null,"x"],"c":{"d":1.5}}"#).unwrap();
        assert_eq!(Value::Object(map), serde_json::json!({"a":1,"b":[true,null,"x"],"c":{"d":1.5}}));
    }
}
