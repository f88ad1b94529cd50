//! Client IP addresses, minimised. A stored IP is truncated — IPv4 to its /24, IPv6 to its /48 —
//! enough to tell roughly where a request came from, too little to single out a household
//! (GDPR Art. 5(1)(c), data minimisation).

use std::net::IpAddr;

/// The network an address belongs to, as an address: `203.0.113.77` → `203.0.113.0`,
/// `2001:db8:abcd:12::1` → `2001:db8:abcd::`. IPv4-mapped IPv6 addresses count as IPv4.
pub fn truncate(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0")
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            std::net::Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0).to_string()
        }
    }
}

/// The unit one client is counted as for rate limits: the address for IPv4, the /64 for IPv6
/// (one subscriber usually holds a whole /64 and can pick any address in it).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

/// The client's address in a forwarding header's value (`X-Forwarded-For: client, proxy1`)
/// written by `hops` proxies that each add an entry: the entry `hops` from the right. Entries
/// further left were sent by the client itself — a proxy that appends keeps them — so taking the
/// first would let any client choose its address (its rate-limit budget, its country). `None`
/// when that entry is missing or not an address (the caller falls back to the socket peer).
pub fn forwarded_client(value: &str, hops: usize) -> Option<IpAddr> {
    let entries: Vec<&str> = value.split(',').map(str::trim).collect();
    let at = entries.len().checked_sub(hops.max(1))?;
    entries[at].parse().ok()
}

/// Whether `peer` is one of the proxies whose forwarding header is believed. IPv4-mapped IPv6
/// peers (a dual-stack socket) count as IPv4.
pub fn is_trusted_proxy(peer: IpAddr, trusted: &[ipnet::IpNet]) -> bool {
    let peer = peer.to_canonical();
    trusted.iter().any(|net| net.contains(&peer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_the_entry_the_proxies_wrote() {
        #[rustfmt::skip]
        let cases: [(&str, usize, Option<&str>); 7] = [
            ("203.0.113.9", 1, Some("203.0.113.9")),
            // A client-sent entry before the one the load balancer appended is ignored.
            ("6.6.6.6, 203.0.113.9", 1, Some("203.0.113.9")),
            ("6.6.6.6, 203.0.113.9, 198.51.100.1", 2, Some("203.0.113.9")),
            ("2001:db8::1 ,  198.51.100.1", 2, Some("2001:db8::1")),
            // Fewer entries than proxies: the header did not come through them all.
            ("203.0.113.9", 2, None),
            ("203.0.113.9, not-an-ip", 1, None),
            ("203.0.113.9", 0, Some("203.0.113.9")),
        ];
        for (value, hops, want) in cases {
            assert_eq!(forwarded_client(value, hops), want.map(|w| w.parse().unwrap()), "{value} / {hops}");
        }
    }

    #[test]
    fn only_listed_peers_are_proxies() {
        let nets: Vec<ipnet::IpNet> = ["10.0.0.0/8", "2001:db8:1::/48"].iter().map(|n| n.parse().unwrap()).collect();
        #[rustfmt::skip]
        let cases = [
            ("10.1.2.3", true), ("::ffff:10.1.2.3", true), ("2001:db8:1:5::9", true),
            ("11.0.0.1", false), ("127.0.0.1", false), ("2001:db8:2::1", false), ("::a01:203", false),
        ];
        for (peer, want) in cases {
            assert_eq!(is_trusted_proxy(peer.parse().unwrap(), &nets), want, "{peer}");
        }
        assert!(!is_trusted_proxy("10.1.2.3".parse().unwrap(), &[]), "an empty list trusts no one");
    }

    #[test]
    fn truncation() {
        for (ip, want) in [
            ("203.0.113.77", "203.0.113.0"),
            ("10.0.0.1", "10.0.0.0"),
            ("2001:db8:abcd:12::1", "2001:db8:abcd::"),
            ("2001:db8:abcd:ffff:ffff:ffff:ffff:ffff", "2001:db8:abcd::"),
            ("::ffff:198.51.100.9", "198.51.100.0"),
            ("::1", "::"),
        ] {
            assert_eq!(truncate(ip.parse().unwrap()), want, "{ip}");
        }
    }

    #[test]
    fn rate_limit_keys() {
        let k = |s: &str| client_key(s.parse().unwrap()).to_string();
        assert_eq!(k("2001:db8:1:2:3:4:5:6"), k("2001:db8:1:2:ffff::1"));
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
        assert_eq!(k("198.51.100.9"), "198.51.100.9");
    }
}
