//! Read-after-write over a replica that may lag. Every successful write answers with a
//! `Consistency-Token`: the primary's log position once the write committed. A read that may lag
//! ([`MayLag`], declared on its operation) goes to the replica only once the replica has replayed
//! past the token the client sends back, and, for a keyed caller, past that key's own last write
//! through this instance, so a client sees its own writes even when it sends nothing back.
//! Without a replica there is no token: every read is on the primary.

use std::{
    collections::HashMap,
    fmt,
    str::FromStr,
    sync::{Arc, Mutex},
};

use platform::replica::{Freshness, Lsn, Reads};
use poem::{Endpoint, IntoResponse, Request, RequestBody, Response, Result as PoemResult, http::HeaderValue};
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ExtractParamOptions,
    error::ParseParamError,
    registry::{MetaParamIn, MetaSchema, MetaSchemaRef, Registry},
    types::{ParseFromParameter, ParseResult, Type},
};
use sqlx::PgPool;
use uuid::Uuid;

use super::input::{OneHeader, scalar_type};
use crate::access::Caller;

/// The header, in answers to writes and in reads that send it back.
pub const HEADER: &str = "consistency-token";

/// Keys whose last write an instance remembers; past it, it forgets them all and starts again.
const REMEMBERED_KEYS: usize = 10_000;

/// A consistency token: a log position, written as 16 hexadecimal digits (`00000016B374D848`).
/// Letters and digits only, so that it travels in a header as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token(pub Lsn);

/// What a token looks like, for the spec.
pub const TOKEN_PATTERN: &str = "^[0-9A-F]{16}$";

scalar_type!(
    Token,
    Lsn,
    MetaSchema {
        description: Some("The `Consistency-Token` of an answer to a write, sent back as it came."),
        example: Some(serde_json::Value::String("00000016B374D848".to_owned())),
        pattern: Some(TOKEN_PATTERN.to_owned()),
        ..MetaSchema::new("string")
    }
);

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", self.0.0)
    }
}

impl FromStr for Token {
    type Err = &'static str;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let hex = text.len() == 16 && text.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b));
        let position = hex.then(|| u64::from_str_radix(text, 16).ok()).flatten();
        position.map(|p| Self(Lsn(p))).ok_or("a token is the 16 hexadecimal digits (0-9, A-F) a write answered with")
    }
}

impl ParseFromParameter for Token {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        value.parse().map_err(poem_openapi::types::ParseError::custom)
    }
}

/// A read that may lag, and what it must not be older than: the token the client sent, or its
/// key's last write here, whichever is later.
pub struct MayLag {
    after: Option<Lsn>,
}

impl MayLag {
    /// Runs `read` on the replica if it is fresh enough, else on the primary.
    pub async fn run<T, F, Fut>(&self, reads: &Reads, operation: &'static str, read: F) -> Result<T, sqlx::Error>
    where
        F: Fn(PgPool) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        reads.run(operation, Freshness::MayLag, self.after, read).await
    }
}

impl<'a> ApiExtractor<'a> for MayLag {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::Parameter];
    const PARAM_IS_REQUIRED: bool = false;
    type ParamType = Option<Token>;
    type ParamRawType = Lsn;

    fn register(registry: &mut Registry) {
        Token::register(registry);
    }

    fn param_in() -> Option<MetaParamIn> {
        Some(MetaParamIn::Header)
    }

    fn param_schema_ref() -> Option<MetaSchemaRef> {
        Some(Token::schema_ref())
    }

    fn param_raw_type(&self) -> Option<&Lsn> {
        self.after.as_ref()
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        if !param_opts.name.eq_ignore_ascii_case(HEADER) {
            return Err(ParseParamError { name: param_opts.name, reason: format!("is read from {HEADER}") }.into());
        }
        let OneHeader(sent) = OneHeader::<Option<Token>>::from_request(request, body, param_opts).await?;
        let own = request.data::<LastWrite>().map(|last| last.0);
        Ok(Self { after: sent.map(|token| token.0).max(own) })
    }
}

/// The caller's key's last write through this instance, for the reads inside.
#[derive(Clone, Copy, Debug)]
struct LastWrite(Lsn);

/// What the layer keeps: the reads (for the token), and each key's last write.
#[derive(Clone)]
pub struct Writes {
    reads: Reads,
    last: Arc<Mutex<HashMap<Uuid, Lsn>>>,
}

impl Writes {
    pub fn new(reads: Reads) -> Self {
        Self { reads, last: Arc::default() }
    }

    fn last(&self, key: Uuid) -> Option<Lsn> {
        self.last.lock().expect("not poisoned").get(&key).copied()
    }

    fn remember(&self, key: Uuid, position: Lsn) {
        let mut last = self.last.lock().expect("not poisoned");
        if last.len() >= REMEMBERED_KEYS && !last.contains_key(&key) {
            last.clear();
        }
        let entry = last.entry(key).or_default();
        *entry = (*entry).max(position);
    }

    /// Around every operation, inside the door (which names the caller): gives reads the key's
    /// last write, and each successful write its token.
    pub async fn track<E: Endpoint>(&self, next: &E, mut request: Request) -> PoemResult<Response> {
        if !self.reads.has_replica() {
            return next.call(request).await.map(IntoResponse::into_response);
        }
        let key = request.data::<Arc<Caller>>().map(|caller| caller.key_id);
        if let Some(position) = key.and_then(|key| self.last(key)) {
            request.set_data(LastWrite(position));
        }
        let write = !request.method().is_safe();
        let mut response = next.call(request).await?.into_response();
        if write
            && response.status().is_success()
            && let Some(position) = self.reads.token().await
        {
            if let Ok(value) = HeaderValue::from_str(&Token(position).to_string()) {
                response.headers_mut().insert(HEADER, value);
            }
            if let Some(key) = key {
                self.remember(key, position);
            }
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_sixteen_hexadecimal_digits() {
        let token = Token(Lsn(0x16_B374_D848));
        assert_eq!(token.to_string(), "00000016B374D848");
        assert_eq!("00000016B374D848".parse::<Token>(), Ok(token));
        for bad in ["", "16/B374D848", "00000016b374d848", "0000016B374D848", "000000016B374D848", "G000000000000000"] {
            assert!(bad.parse::<Token>().is_err(), "{bad:?}");
        }
    }
}
