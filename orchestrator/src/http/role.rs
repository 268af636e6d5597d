//! Who may call an operation, declared where the operation is: its handler takes a parameter
//! `_: Needs<Operator>` (or `Client`, `Admin`, `Anyone`), which puts the role in the generated
//! spec. [`spec::finish`](super::spec::finish) turns it into the one bearer scheme and an
//! `x-role` on the operation; the door ([`super::access`]) reads that and admits or refuses the
//! request before any handler runs. An operation that declares none is refused at start-up.

use std::marker::PhantomData;

use poem::{Request, RequestBody};
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ExtractParamOptions,
    registry::{MetaSecurityScheme, Registry},
};

use crate::access::Role;

/// Who may call an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without a key.
    Public,
    /// A key of this role or a higher one.
    Needs(Role),
}

impl Access {
    /// As the spec's `x-role` writes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Needs(role) => role.into(),
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "public" => Some(Self::Public),
            role => role.parse().ok().map(Self::Needs),
        }
    }
}

/// The prefix of the placeholder security scheme each requirement registers; `spec::finish`
/// replaces them with the bearer scheme.
pub const SCHEME_PREFIX: &str = "role:";

/// A role an operation can require.
pub trait Requirement: Send + Sync + 'static {
    const ACCESS: Access;
    /// `role:` and the access's name.
    const SCHEME: &'static str;
}

/// Anyone may call it, without a key: health and the docs.
pub struct Anyone;
pub struct Client;
pub struct Operator;
pub struct Admin;

impl Requirement for Anyone {
    const ACCESS: Access = Access::Public;
    const SCHEME: &'static str = "role:public";
}

impl Requirement for Client {
    const ACCESS: Access = Access::Needs(Role::Client);
    const SCHEME: &'static str = "role:client";
}

impl Requirement for Operator {
    const ACCESS: Access = Access::Needs(Role::Operator);
    const SCHEME: &'static str = "role:operator";
}

impl Requirement for Admin {
    const ACCESS: Access = Access::Needs(Role::Admin);
    const SCHEME: &'static str = "role:admin";
}

/// The declaration itself: a handler parameter that extracts nothing (the door has already
/// admitted the request) and says, in the spec, what the operation needs.
pub struct Needs<R>(PhantomData<R>);

impl<'a, R: Requirement> ApiExtractor<'a> for Needs<R> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        registry.create_security_scheme(
            R::SCHEME,
            MetaSecurityScheme {
                ty: "http",
                description: None,
                name: None,
                key_in: None,
                scheme: Some("bearer"),
                bearer_format: None,
                flows: None,
                openid_connect_url: None,
            },
        );
    }

    fn security_schemes() -> Vec<&'static str> {
        vec![R::SCHEME]
    }

    async fn from_request(
        _request: &'a Request,
        _body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        Ok(Self(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_access_reads_back_as_it_is_written() {
        for access in [Anyone::ACCESS, Client::ACCESS, Operator::ACCESS, Admin::ACCESS] {
            assert_eq!(Access::parse(access.name()), Some(access));
        }
        for scheme in [Anyone::SCHEME, Client::SCHEME, Operator::SCHEME, Admin::SCHEME] {
            let name = scheme.strip_prefix(SCHEME_PREFIX).unwrap();
            assert!(Access::parse(name).is_some(), "{scheme}");
        }
        assert_eq!(Access::parse("root"), None);
    }
}
