//! Strict types for what clients send. poem-openapi's `String` takes a JSON number or boolean
//! for a string (`{"sku": 123}` becomes `"123"`) and lets any character through, NUL included,
//! which Postgres then refuses; its `Header` drops a value that is not visible ASCII, as if it
//! were not sent. The types here refuse all of that with a 400, and their schemas say exactly
//! what they accept, so the spec and the server agree.

use std::{borrow::Cow, fmt, ops::Deref};

use poem::Request;
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ExtractParamOptions,
    error::ParseParamError,
    registry::{MetaParamIn, MetaSchema, MetaSchemaRef, Registry},
    types::{ParseError, ParseFromJSON, ParseFromParameter, ParseResult, ToJSON, Type},
};
use regex::Regex;
use serde_json::Value;
use uuid::Uuid;

use stock::MAX_QUANTITY;

/// What a kind of text admits, written once, as its pattern: the spec states it (ECMA-262) and
/// the server checks it (Rust's `regex`; both read these patterns alike).
pub trait Rule: Send + Sync + 'static {
    const PATTERN: &'static str;
    /// How the rule reads in an error message.
    const SAYS: &'static str;

    /// [`PATTERN`](Self::PATTERN), compiled once.
    fn pattern() -> &'static Regex;

    fn admits(text: &str) -> bool {
        Self::pattern().is_match(text)
    }
}

/// Declares a [`Rule`]: its name, its pattern and how it reads in an error message.
macro_rules! rule {
    ($(#[$doc:meta])* $name:ident, $pattern:literal, $says:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug)]
        pub struct $name;

        impl $crate::http::input::Rule for $name {
            const PATTERN: &'static str = $pattern;
            const SAYS: &'static str = $says;

            fn pattern() -> &'static regex::Regex {
                static PATTERN: std::sync::LazyLock<regex::Regex> =
                    std::sync::LazyLock::new(|| regex::Regex::new($pattern).expect("a rule's pattern is a regex"));
                &PATTERN
            }
        }
    };
}
pub(crate) use rule;

rule!(
    /// One line: no control character (C0, DEL, C1), and no space at either end.
    OneLine,
    r"^[^\x00-\x1F\x7F-\x9F ]([^\x00-\x1F\x7F-\x9F]*[^\x00-\x1F\x7F-\x9F ])?$",
    "one line, without control characters or spaces at either end"
);

rule!(
    /// Free text: tabs and line breaks allowed, no other control character.
    Prose,
    r"^[^\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F]*$",
    "text without control characters other than tabs and line breaks"
);

rule!(
    /// A key's name: what the timeline shows as the actor, so plain and short.
    Handle,
    r"^[A-Za-z0-9][A-Za-z0-9._@+-]*$",
    "a letter or digit, then letters, digits and . _ @ + -"
);

rule!(
    /// A token a client chooses, carried in a header: visible ASCII only.
    Token,
    r"^[\x21-\x7E]+$",
    "visible ASCII characters, without spaces"
);

/// A string of 1 to `MAX` characters that `R` admits, and only a JSON string.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Text<R, const MAX: usize> {
    value: String,
    rule: std::marker::PhantomData<R>,
}

pub type Line<const MAX: usize> = Text<OneLine, MAX>;
pub type Free<const MAX: usize> = Text<Prose, MAX>;

impl<R: Rule, const MAX: usize> Text<R, MAX> {
    pub fn parse(value: String) -> Result<Self, String> {
        let length = value.chars().count();
        if !(1..=MAX).contains(&length) {
            return Err(format!("must be 1 to {MAX} characters, not {length}"));
        }
        if !R::admits(&value) {
            return Err(format!("must be {}", R::SAYS));
        }
        Ok(Self { value, rule: std::marker::PhantomData })
    }

    pub fn into_inner(self) -> String {
        self.value
    }

    /// A value for the spec's examples: one the rule refuses is a bug, found when the spec is built.
    pub fn example(value: &str) -> Self {
        Self::parse(value.to_owned()).unwrap_or_else(|why| panic!("the example {value:?} {why}"))
    }
}

impl<R, const MAX: usize> Deref for Text<R, MAX> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.value
    }
}

impl<R, const MAX: usize> AsRef<str> for Text<R, MAX> {
    fn as_ref(&self) -> &str {
        &self.value
    }
}

impl<R, const MAX: usize> fmt::Debug for Text<R, MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.value, f)
    }
}

impl<R: Rule, const MAX: usize> Type for Text<R, MAX> {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "string".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            min_length: Some(1),
            max_length: Some(MAX),
            pattern: Some(R::PATTERN.to_owned()),
            ..MetaSchema::new("string")
        }))
    }

    fn as_raw_value(&self) -> Option<&Self> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
        Box::new(std::iter::once(self))
    }
}

impl<R: Rule, const MAX: usize> ParseFromJSON for Text<R, MAX> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value.unwrap_or_default() {
            Value::String(text) => Self::parse(text).map_err(ParseError::custom),
            other => Err(ParseError::expected_type(other)),
        }
    }
}

impl<R: Rule, const MAX: usize> ParseFromParameter for Text<R, MAX> {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        Self::parse(value.to_owned()).map_err(ParseError::custom)
    }
}

impl<R: Rule, const MAX: usize> ToJSON for Text<R, MAX> {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.value.clone()))
    }
}

/// `Type` for a newtype over one scalar value, with the schema given: what every such input type
/// of the API has in common.
macro_rules! scalar_type {
    ($name:ty, $raw:ty, $schema:expr) => {
        impl poem_openapi::types::Type for $name {
            const IS_REQUIRED: bool = true;
            type RawValueType = $raw;
            type RawElementValueType = $raw;

            fn name() -> std::borrow::Cow<'static, str> {
                let schema: poem_openapi::registry::MetaSchema = $schema;
                schema.ty.into()
            }

            fn schema_ref() -> poem_openapi::registry::MetaSchemaRef {
                poem_openapi::registry::MetaSchemaRef::Inline(Box::new($schema))
            }

            fn as_raw_value(&self) -> Option<&$raw> {
                Some(&self.0)
            }

            fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a $raw> + 'a> {
                Box::new(std::iter::once(&self.0))
            }
        }
    };
}
pub(crate) use scalar_type;

/// A field a body may leave out. poem-openapi's `Option` also takes an explicit `null` for it,
/// which the spec does not allow (the field is not nullable); this refuses `null` with a 400, so
/// a client that sends one learns it was not read as a value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Optional<T>(pub Option<T>);

impl<T> Optional<T> {
    pub fn into_inner(self) -> Option<T> {
        self.0
    }
}

impl<T: Type> Type for Optional<T> {
    const IS_REQUIRED: bool = false;
    type RawValueType = T::RawValueType;
    type RawElementValueType = T::RawElementValueType;

    fn name() -> Cow<'static, str> {
        format!("optional<{}>", T::name()).into()
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        self.0.as_ref().and_then(Type::as_raw_value)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        match &self.0 {
            Some(value) => value.raw_element_iter(),
            None => Box::new(std::iter::empty()),
        }
    }
}

impl<T: ParseFromJSON> ParseFromJSON for Optional<T> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            None => Ok(Self(None)),
            Some(Value::Null) => Err(ParseError::custom("null is not a value here: leave the field out instead")),
            Some(value) => T::parse_from_json(Some(value)).map(|v| Self(Some(v))).map_err(ParseError::propagate),
        }
    }
}

impl<T: ToJSON> ToJSON for Optional<T> {
    fn to_json(&self) -> Option<Value> {
        self.0.as_ref().and_then(ToJSON::to_json)
    }
}

/// A change of stock: a whole number of units, not zero, at most [`MAX_QUANTITY`] either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delta(pub i64);

scalar_type!(Delta, i64, {
    let side = |minimum: i64, maximum: i64| {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            minimum: Some(minimum as f64),
            maximum: Some(maximum as f64),
            ..MetaSchema::new_with_format("integer", "int64")
        }))
    };
    MetaSchema {
        one_of: vec![side(1, MAX_QUANTITY), side(-MAX_QUANTITY, -1)],
        ..MetaSchema::new_with_format("integer", "int64")
    }
});

impl ParseFromJSON for Delta {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value.unwrap_or_default() {
            Value::Number(n) => match n.as_i64() {
                Some(d) if d != 0 && d.abs() <= MAX_QUANTITY => Ok(Self(d)),
                _ => Err(ParseError::custom(format!(
                    "must be a whole number from 1 to {MAX_QUANTITY}, or the same negative"
                ))),
            },
            other => Err(ParseError::expected_type(other)),
        }
    }
}

impl ToJSON for Delta {
    fn to_json(&self) -> Option<Value> {
        Some(self.0.into())
    }
}

/// An id as the API writes it: 36 characters, lowercase hexadecimal digits in groups of 8-4-4-4-12.
/// The other spellings a UUID parser reads (uppercase, no hyphens, braces, `urn:uuid:`) are a 400
/// in a path, a query or a body alike, so that an id has one spelling everywhere it is stored,
/// the audit included, and a search for it finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Id(pub Uuid);

impl Id {
    pub const PATTERN: &'static str = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$";

    pub fn parse(text: &str) -> Result<Self, String> {
        let hex = |range: std::ops::Range<usize>| {
            text.as_bytes()[range].iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        let canonical = text.len() == 36
            && [8, 13, 18, 23].iter().all(|&i| text.as_bytes()[i] == b'-')
            && [0..8, 9..13, 14..18, 19..23, 24..36].into_iter().all(hex);
        match Uuid::try_parse(text) {
            Ok(id) if canonical => Ok(Self(id)),
            _ => Err(format!(
                "must be an id in its one spelling: lowercase hexadecimal digits in groups of 8-4-4-4-12, such as {}",
                Uuid::nil()
            )),
        }
    }
}

impl std::ops::Deref for Id {
    type Target = Uuid;

    fn deref(&self) -> &Uuid {
        &self.0
    }
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl From<Id> for Uuid {
    fn from(id: Id) -> Self {
        id.0
    }
}

scalar_type!(
    Id,
    Uuid,
    MetaSchema {
        pattern: Some(Id::PATTERN.to_owned()),
        min_length: Some(36),
        max_length: Some(36),
        ..MetaSchema::new_with_format("string", "uuid")
    }
);

impl ParseFromJSON for Id {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value.unwrap_or_default() {
            Value::String(text) => Self::parse(&text).map_err(ParseError::custom),
            other => Err(ParseError::expected_type(other)),
        }
    }
}

impl ParseFromParameter for Id {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        Self::parse(value).map_err(ParseError::custom)
    }
}

impl ToJSON for Id {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.to_string()))
    }
}

/// The first key a JSON document repeats within one object, if any. serde_json keeps the last of
/// a repeated key, so `{"role": "client", "role": "admin"}` would be read as an admin while a
/// person reading it sees a client: the body is refused instead, as an unknown field is. A body
/// that is not JSON at all is left to the parser that reads it, which says why.
pub fn repeated_key(body: &[u8]) -> Option<String> {
    use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

    /// Any JSON value, read only to find a repeated key.
    struct Walk;

    impl<'de> Deserialize<'de> for Walk {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_any(Walk)
        }
    }

    impl<'de> Visitor<'de> for Walk {
        type Value = Walk;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("any JSON value")
        }

        fn visit_bool<E>(self, _: bool) -> Result<Walk, E> {
            Ok(Walk)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Walk, E> {
            Ok(Walk)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Walk, E> {
            Ok(Walk)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Walk, E> {
            Ok(Walk)
        }
        fn visit_str<E>(self, _: &str) -> Result<Walk, E> {
            Ok(Walk)
        }
        fn visit_unit<E>(self) -> Result<Walk, E> {
            Ok(Walk)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Walk, A::Error> {
            while items.next_element::<Walk>()?.is_some() {}
            Ok(Walk)
        }

        fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Walk, A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(key) = entries.next_key::<String>()? {
                entries.next_value::<Walk>()?;
                if !seen.insert(key.clone()) {
                    return Err(de::Error::custom(RepeatedKey(key)));
                }
            }
            Ok(Walk)
        }
    }

    struct RepeatedKey(String);

    impl std::fmt::Display for RepeatedKey {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{:?}", self.0)
        }
    }

    match serde_json::from_slice::<Walk>(body) {
        Err(error) if error.classify() == serde_json::error::Category::Data => Some(error.to_string()),
        _ => None,
    }
}

/// A header sent at most once, whose value must be readable: a value that is not visible ASCII,
/// or a second copy, is a 400 rather than silently dropped.
pub struct OneHeader<T>(pub T);

impl<'a, T: ParseFromParameter> ApiExtractor<'a> for OneHeader<T> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::Parameter];
    const PARAM_IS_REQUIRED: bool = T::IS_REQUIRED;
    type ParamType = T;
    type ParamRawType = T::RawValueType;

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn param_in() -> Option<MetaParamIn> {
        Some(MetaParamIn::Header)
    }

    fn param_schema_ref() -> Option<MetaSchemaRef> {
        Some(T::schema_ref())
    }

    fn param_raw_type(&self) -> Option<&Self::ParamRawType> {
        self.0.as_raw_value()
    }

    async fn from_request(
        request: &'a Request,
        _body: &mut poem::RequestBody,
        param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let name = param_opts.name;
        let invalid = |reason: String| poem::Error::from(ParseParamError { name, reason });
        let raw: Vec<_> = request.headers().get_all(name).iter().collect();
        if raw.len() > 1 {
            return Err(invalid("send it once".into()));
        }
        let values = raw
            .into_iter()
            .map(|value| value.to_str().map_err(|_| invalid("must be visible ASCII characters".into())))
            .collect::<poem::Result<Vec<&str>>>()?;
        let parsed = T::parse_from_parameters(values).map_err(|error| invalid(error.into_message()))?;
        Ok(Self(parsed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What each rule admits, character by character: every character up to U+3000 (the
    /// controls, the spaces, Latin, the marks) and a spread of those above, alone and at either
    /// end of a line, against the rule stated in words.
    fn admits_as_stated<R: Rule>(stated: impl Fn(&str) -> bool) {
        let chars = (0..0x3000).chain((0x3000..=0x10FFFF).step_by(97)).filter_map(char::from_u32);
        for c in chars {
            for text in [c.to_string(), format!("a{c}"), format!("{c}a"), format!("a{c}a")] {
                assert_eq!(R::admits(&text), stated(&text), "{} on {text:?}", std::any::type_name::<R>());
            }
        }
    }

    #[test]
    fn each_rule_admits_what_it_says() {
        admits_as_stated::<OneLine>(|t| !t.starts_with(' ') && !t.ends_with(' ') && !t.chars().any(char::is_control));
        admits_as_stated::<Prose>(|t| !t.chars().any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')));
        admits_as_stated::<Handle>(|t| {
            let mut chars = t.chars();
            chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
                && chars.all(|c| c.is_ascii_alphanumeric() || "._@+-".contains(c))
        });
        admits_as_stated::<Token>(|t| t.bytes().all(|b| b.is_ascii_graphic()));
    }

    #[test]
    fn only_json_strings_are_text() {
        assert!(Line::<10>::parse_from_json(Some(serde_json::json!(123))).is_err());
        assert!(Line::<10>::parse_from_json(Some(serde_json::json!(false))).is_err());
        assert!(Line::<10>::parse_from_json(Some(serde_json::json!("a\u{0}b"))).is_err());
        assert!(Line::<3>::parse_from_json(Some(serde_json::json!("abcd"))).is_err());
        assert!(Line::<10>::parse_from_json(Some(serde_json::json!(""))).is_err());
        assert!(Line::<10>::parse_from_json(Some(serde_json::json!(" a"))).is_err());
        assert_eq!(&*Line::<10>::parse_from_json(Some(serde_json::json!("Łódź"))).unwrap(), "Łódź");
        assert!(Free::<10>::parse_from_json(Some(serde_json::json!("a\nb"))).is_ok());
    }

    #[test]
    fn a_key_repeated_in_one_object_is_found_wherever_it_is() {
        let found = repeated_key(br#"{"name":"e10","role":"client","role":"admin"}"#).unwrap();
        assert!(found.starts_with(r#""role""#), "{found}");
        let nested = br#"{"store_id":"x","items":[{"product_id":"a","quantity":1,"quantity":2}]}"#;
        assert!(repeated_key(nested).unwrap().starts_with(r#""quantity""#));
        assert!(repeated_key(br#"{"a":{"b":1},"c":{"b":2}}"#).is_none(), "the same key in two objects is fine");
        assert!(repeated_key(br#"{"a":1"#).is_none(), "broken JSON is the parser's to refuse");
        assert!(repeated_key(br#"[1, "x", null, true, -1.5, {}]"#).is_none());
    }

    #[test]
    fn an_id_has_one_spelling() {
        let id = Uuid::new_v4();
        assert_eq!(Id::parse(&id.to_string()).unwrap().0, id);
        let pattern = regex::Regex::new(Id::PATTERN).unwrap();
        for other in [
            id.to_string().to_uppercase(),
            id.simple().to_string(),
            id.braced().to_string(),
            id.urn().to_string(),
            format!(" {id}"),
            format!("{id}\u{0}"),
            id.to_string().replacen('-', "", 1),
        ] {
            assert!(Id::parse(&other).is_err(), "{other:?} is refused");
            assert!(!pattern.is_match(&other), "and the spec's pattern says so: {other:?}");
        }
        assert!(pattern.is_match(&id.to_string()));
        assert!(Id::parse_from_json(Some(serde_json::json!(7))).is_err());
    }
}
