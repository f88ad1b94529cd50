//! Where deliveries may go. A provider's `instance_url` is tenant configuration, so without a
//! guard any tenant admin could make the gateway POST to the operator's internal network (cloud
//! metadata at 169.254.169.254, a database's HTTP port, an admin panel): server-side request
//! forgery. By default only public addresses are reached: IP literals are checked before
//! sending, and host names through a DNS resolver that drops non-public answers, so a name
//! that resolves (or rebinds) to a private address is refused at connect time too. Operators
//! whose self-hosted Plausible or Umami lives on the internal network set
//! `delivery.allow_private_destinations`.

use std::{
    error::Error as StdError,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether `ip` is an address on the public internet. An IPv6 address that carries an IPv4 one
/// (mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) is
/// as public as the IPv4 address it leads to: on a network with NAT64, `64:ff9b::a00:5` is
/// 10.0.0.5. The local-use NAT64 prefix `64:ff9b:1::/48` is never public.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => is_public_v4(a),
        IpAddr::V6(a) => match embedded_v4(a) {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(a),
        },
    }
}

/// The IPv4 address an IPv6 address carries, if it is of a kind that reaches one.
fn embedded_v4(a: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = a.segments();
    let low = Ipv4Addr::from(((s[6] as u32) << 16) | s[7] as u32);
    match s {
        [0, 0, 0, 0, 0, 0xffff, ..] => Some(low),
        // IPv4-compatible (deprecated), but not :: and ::1.
        [0, 0, 0, 0, 0, 0, hi, _] if hi != 0 => Some(low),
        [0x64, 0xff9b, 0, 0, 0, 0, ..] => Some(low),
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::from(((hi as u32) << 16) | lo as u32)),
        _ => None,
    }
}

fn is_public_v4(a: Ipv4Addr) -> bool {
    let [o1, o2, ..] = a.octets();
    !(a.is_private()
        || a.is_loopback()
        || a.is_link_local()
        || a.is_unspecified()
        || a.is_broadcast()
        || a.is_documentation()
        || a.is_multicast()
        || o1 == 0
        || o1 >= 240
        || (o1 == 100 && (o2 & 0xc0) == 64) // 100.64.0.0/10, carrier-grade NAT
        || (o1 == 198 && (o2 & 0xfe) == 18)) // 198.18.0.0/15, benchmarking
}

fn is_public_v6(a: Ipv6Addr) -> bool {
    let s0 = a.segments()[0];
    !(a.is_loopback()
        || a.is_unspecified()
        || a.is_multicast()
        || (s0 & 0xfe00) == 0xfc00 // fc00::/7, unique local
        || (s0 & 0xffc0) == 0xfe80 // fe80::/10, link local
        || (s0 == 0x64 && a.segments()[1] == 0xff9b && a.segments()[2] == 1) // 64:ff9b:1::/48, local-use NAT64
        || (s0 == 0x2001 && a.segments()[1] == 0x0db8)) // 2001:db8::/32, documentation
}

/// The error a refused destination fails with; the worker dead-letters on it.
#[derive(Debug)]
pub struct PrivateDestination(pub String);

impl fmt::Display for PrivateDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is not a public address; deliveries to private networks need `delivery.allow_private_destinations`",
            self.0
        )
    }
}

impl StdError for PrivateDestination {}

/// Refuses a URL whose host is a non-public IP literal (reqwest does not consult the resolver for
/// literals). Host names are left to [`PublicOnly`].
pub fn check_literal(url: &str) -> Result<(), PrivateDestination> {
    let Ok(u) = url::Url::parse(url) else { return Ok(()) };
    let ip = match u.host() {
        Some(url::Host::Ipv4(a)) => IpAddr::V4(a),
        Some(url::Host::Ipv6(a)) => IpAddr::V6(a),
        _ => return Ok(()),
    };
    if is_public(ip) { Ok(()) } else { Err(PrivateDestination(ip.to_string())) }
}

/// A DNS resolver that answers only public addresses.
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = found.iter().copied().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                let shown = found.first().map_or(host.clone(), |a| format!("{host} ({})", a.ip()));
                return Err(Box::new(PrivateDestination(shown)) as Box<dyn StdError + Send + Sync>);
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

/// Whether a transport error was a refused destination.
pub fn refused<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a PrivateDestination> {
    let mut cur: Option<&'a (dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(p) = err.downcast_ref::<PrivateDestination>() {
            return Some(p);
        }
        cur = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_and_private_addresses() {
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "2a00:1450:4001::1",
            "::ffff:8.8.8.8",
            "100.128.0.1",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip} is public");
        }
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "198.18.0.1",
            "192.0.2.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            // NAT64, 6to4 and IPv4-compatible forms of private addresses.
            "64:ff9b::a00:5",
            "64:ff9b:1::a9fe:a9fe",
            "2002:a00:1::1",
            "::a00:1",
            "2001:db8::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip} is not public");
        }
    }

    #[test]
    fn literals_are_checked_names_are_left_to_the_resolver() {
        assert!(check_literal("http://127.0.0.1:8000/plausible/api/event").is_err());
        assert!(check_literal("http://[::1]/api/send").is_err());
        assert!(check_literal("http://169.254.169.254/latest").is_err());
        assert!(check_literal("https://8.8.8.8/api/event").is_ok());
        assert!(check_literal("https://plausible.io/api/event").is_ok());
    }

    #[tokio::test]
    async fn the_resolver_refuses_names_of_private_addresses() {
        let err = match PublicOnly.resolve("localhost".parse().unwrap()).await {
            Ok(_) => panic!("localhost resolved"),
            Err(e) => e,
        };
        let refusal = refused(err.as_ref()).expect("a PrivateDestination error");
        assert!(refusal.to_string().contains("allow_private_destinations"));
    }
}
