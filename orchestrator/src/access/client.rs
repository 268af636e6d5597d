//! Where a request comes from, as budgets and connection caps count it.
//!
//! The client is the TCP peer, unless the peer is one of the configured trusted proxies
//! (`HTTP_TRUSTED_PROXIES`): then it is the nearest address the forwarding headers name that
//! is not a trusted proxy itself, read from the right, where the proxies appended what they saw.
//! `Forwarded` (RFC 7239) is read when present, `X-Forwarded-For` otherwise. Anyone else's
//! forwarding headers are ignored: a client cannot choose whose budget it spends.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
};

use ipnet::IpNet;
use poem::http::{HeaderMap, HeaderName, header::FORWARDED};

/// The forwarding hops read at most, from the right: past them the header is an attacker's.
const MAX_HOPS: usize = 16;

/// A client address as one party: an IPv4 address, or an IPv6 /64 (what one subscriber usually
/// holds, so that a client cannot multiply itself across its own network).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientAddr(IpAddr);

impl ClientAddr {
    pub fn of(ip: IpAddr) -> Self {
        Self(match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let s = v6.segments();
                IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
            }
            v4 => v4,
        })
    }
}

impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// The proxies whose forwarding headers are believed.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(networks: Vec<IpNet>) -> Self {
        Self(networks)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|network| network.contains(&ip))
    }

    /// The client of a request that `peer` sent with `headers`, and whether a trusted proxy
    /// named it.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> (IpAddr, bool) {
        if !self.contains(peer) {
            return (peer, false);
        }
        let hops = if headers.contains_key(FORWARDED) {
            hops(headers, &FORWARDED, forwarded_for)
        } else {
            hops(headers, &X_FORWARDED_FOR, |hop| parse_ip(hop.trim()))
        };
        // From the right: each trusted hop vouches for the one before it. An address that cannot
        // be read ends the chain at the last proxy that could be trusted.
        let mut client = peer;
        for hop in hops.into_iter().rev().take(MAX_HOPS) {
            match hop {
                Some(ip) if self.contains(ip) => client = ip,
                Some(ip) => return (ip, true),
                None => break,
            }
        }
        (client, true)
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Every hop the header's lines list, in order (a list may be split across lines).
fn hops(headers: &HeaderMap, name: &HeaderName, read: impl Fn(&str) -> Option<IpAddr>) -> Vec<Option<IpAddr>> {
    headers.get_all(name).iter().flat_map(|value| value.to_str().unwrap_or("?").split(',')).map(read).collect()
}

/// The `for=` of one `Forwarded` element: `for=192.0.2.60`, `for="[2001:db8::1]:4711"`;
/// `None` for `unknown`, an obfuscated name, or no `for`.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    let value = element.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        name.trim().eq_ignore_ascii_case("for").then_some(value.trim())
    })?;
    parse_ip(value.trim_matches('"'))
}

/// An address as proxies write it: bare, with a port, or IPv6 in brackets.
fn parse_ip(text: &str) -> Option<IpAddr> {
    text.parse()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| text.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn trusted() -> TrustedProxies {
        TrustedProxies::new(vec!["10.0.0.0/24".parse().unwrap(), "fd00::1/128".parse().unwrap()])
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let spoofed = headers(&[("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=5.6.7.8")]);
        assert_eq!(trusted().client(ip("203.0.113.9"), &spoofed), (ip("203.0.113.9"), false));
        assert_eq!(TrustedProxies::default().client(ip("10.0.0.1"), &spoofed), (ip("10.0.0.1"), false));
    }

    #[test]
    fn a_trusted_proxy_names_the_client_nearest_to_it() {
        let proxies = trusted();
        let peer = ip("10.0.0.1");
        let xff = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.0.0.2")]);
        assert_eq!(proxies.client(peer, &xff), (ip("198.51.100.7"), true), "the spoofed left end is not believed");
        let split = headers(&[("x-forwarded-for", "6.6.6.6"), ("x-forwarded-for", "198.51.100.7:5555")]);
        assert_eq!(proxies.client(peer, &split).0, ip("198.51.100.7"));
        let forwarded = headers(&[
            ("forwarded", r#"for=6.6.6.6, for="[2001:db8::17]:4711";proto=https"#),
            ("x-forwarded-for", "7.7.7.7"),
        ]);
        assert_eq!(proxies.client(peer, &forwarded).0, ip("2001:db8::17"), "Forwarded wins over X-Forwarded-For");
        let v6_proxy = headers(&[("x-forwarded-for", "198.51.100.8")]);
        assert_eq!(proxies.client(ip("fd00::1"), &v6_proxy).0, ip("198.51.100.8"));
    }

    #[test]
    fn an_unreadable_or_missing_hop_leaves_the_proxy_as_the_client() {
        let proxies = trusted();
        let peer = ip("10.0.0.1");
        for pairs in [
            &[][..],
            &[("x-forwarded-for", "not-an-address")],
            &[("forwarded", "for=unknown")],
            &[("x-forwarded-for", "")],
        ] {
            assert_eq!(proxies.client(peer, &headers(pairs)), (peer, true), "{pairs:?}");
        }
        let hidden = headers(&[("forwarded", "for=_hidden, for=10.0.0.3")]);
        assert_eq!(proxies.client(peer, &hidden), (ip("10.0.0.3"), true), "the last proxy that can be named");
        // Every hop a trusted proxy: the leftmost is as near to the client as anyone can tell.
        assert_eq!(proxies.client(peer, &headers(&[("x-forwarded-for", "10.0.0.9, 10.0.0.2")])).0, ip("10.0.0.9"));
    }

    #[test]
    fn ipv6_clients_count_by_their_slash_64() {
        let a = ClientAddr::of(ip("2001:db8:1:2:aaaa::1"));
        assert_eq!(a, ClientAddr::of(ip("2001:db8:1:2:bbbb::9")));
        assert_ne!(a, ClientAddr::of(ip("2001:db8:1:3::1")));
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        assert_eq!(ClientAddr::of(ip("::ffff:10.0.0.1")).to_string(), "10.0.0.1");
    }
}
