//! Where merchant notifications may go: the guard against server-side request forgery (SSRF).
//!
//! A merchant chooses its `notify_url`, and the business layer then POSTs to it from inside the
//! deployment. Without a guard a merchant could point it at the deployment's own services, the
//! cloud's metadata endpoint (169.254.169.254) or anything else on the internal network. So a
//! notification may only reach a **public unicast address**: every address in a special-purpose
//! range ([`special_purpose`]: loopback, private, link-local, CGNAT, unspecified, multicast,
//! broadcast, documentation, benchmarking, reserved, IPv6 unique-local and link-local, and IPv6
//! forms that embed an IPv4 address: IPv4-mapped, IPv4-compatible, NAT64, 6to4, Teredo) is refused
//! with `NOTIFY_URL_FORBIDDEN`, unless the deployment allows its range explicitly
//! ([`EgressRules::allow_private`], e.g. `127.0.0.0/8` for tests and the demo). Plain `http://` is
//! refused too unless allowed ([`EgressRules::allow_http`]): notifications carry refund results
//! and go over HTTPS with certificate verification.
//!
//! The rules are checked when the URL is set (the literal address, or every address its host name
//! resolves to) and again at every delivery on the addresses the connection then uses (see
//! `crate::egress`), so that a name that resolves elsewhere later (DNS rebinding) is caught.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use tuikuan_kernel::{echo, Error, ErrorCode, Result};

/// An address range, `address/prefix` (a bare address is the range of that one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in the range. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is also
    /// compared as the IPv4 address it maps.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let hit = |ip: IpAddr| match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(&n.octets(), &a.octets(), self.prefix),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(&n.octets(), &a.octets(), self.prefix),
            _ => false,
        };
        hit(ip) || hit(ip.to_canonical())
    }
}

fn prefix_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let full = usize::from(prefix / 8);
    let rest = prefix % 8;
    if a[..full] != b[..full] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    (a[full] & mask) == (b[full] & mask)
}

impl FromStr for Cidr {
    type Err = Error;

    fn from_str(s: &str) -> Result<Cidr> {
        let bad = |why: &str| Error::field("notify.allow_private", format!("{} {why}", echo(s)));
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| bad("is not an address range (a.b.c.d/n or x:y::z/n)"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| bad(&format!("has a prefix length outside 0..={max}")))?,
        };
        // The network address itself: no host bits set.
        let masked = Cidr {
            network: match network {
                IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(mask_bits(&a.octets(), prefix))),
                IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(mask_bits(&a.octets(), prefix))),
            },
            prefix,
        };
        if masked.network != network {
            return Err(bad(&format!(
                "has host bits set (the range is {}/{prefix})",
                masked.network
            )));
        }
        Ok(masked)
    }
}

fn mask_bits<const N: usize>(octets: &[u8; N], prefix: u8) -> [u8; N] {
    let mut out = [0u8; N];
    for (i, o) in octets.iter().enumerate() {
        let bits = usize::from(prefix).saturating_sub(i * 8).min(8);
        let mask = if bits == 0 { 0 } else { 0xffu8 << (8 - bits) };
        out[i] = o & mask;
    }
    out
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The special-purpose range `ip` is in (IANA's IPv4 and IPv6 special-purpose registries,
/// RFC 6890 and its updates), or `None` for a public unicast address.
pub fn special_purpose(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(a) => special_v4(a),
        IpAddr::V6(a) => special_v6(a),
    }
}

fn special_v4(a: Ipv4Addr) -> Option<&'static str> {
    let [o0, o1, o2, _] = a.octets();
    Some(match (o0, o1, o2) {
        (0, _, _) => "unspecified (0.0.0.0/8, \"this network\")",
        (10, _, _) => "private (10.0.0.0/8)",
        (100, 64..=127, _) => "shared address space, CGNAT (100.64.0.0/10)",
        (127, _, _) => "loopback (127.0.0.0/8)",
        (169, 254, _) => "link-local (169.254.0.0/16, cloud metadata)",
        (172, 16..=31, _) => "private (172.16.0.0/12)",
        (192, 0, 0) => "IETF protocol assignments (192.0.0.0/24)",
        (192, 0, 2) => "documentation (192.0.2.0/24)",
        (192, 88, 99) => "6to4 relay anycast (192.88.99.0/24)",
        (192, 168, _) => "private (192.168.0.0/16)",
        (198, 18..=19, _) => "benchmarking (198.18.0.0/15)",
        (198, 51, 100) => "documentation (198.51.100.0/24)",
        (203, 0, 113) => "documentation (203.0.113.0/24)",
        (224..=239, _, _) => "multicast (224.0.0.0/4)",
        (240..=255, _, _) => "reserved or broadcast (240.0.0.0/4)",
        _ => return None,
    })
}

fn special_v6(a: Ipv6Addr) -> Option<&'static str> {
    let s = a.segments();
    if a.is_unspecified() {
        return Some("unspecified (::)");
    }
    if a.is_loopback() {
        return Some("loopback (::1)");
    }
    Some(match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => "IPv4-mapped IPv6 (::ffff:0:0/96)",
        [0, 0, 0, 0, 0, 0, _, _] => "IPv4-compatible IPv6 (::/96)",
        [0x64, 0xff9b, ..] => "NAT64 (64:ff9b::/96, 64:ff9b:1::/48)",
        [0x100, 0, 0, 0, ..] => "discard-only (100::/64)",
        [0x2001, 0, ..] => "Teredo (2001::/32)",
        [0x2001, x, ..] if x < 0x200 => "IETF protocol assignments (2001::/23)",
        [0x2001, 0xdb8, ..] => "documentation (2001:db8::/32)",
        [0x2002, ..] => "6to4 (2002::/16)",
        [0x3fff, 0..=0x0fff, ..] => "documentation (3fff::/20)",
        [x, ..] if x & 0xfe00 == 0xfc00 => "unique local (fc00::/7)",
        [x, ..] if x & 0xffc0 == 0xfe80 => "link-local (fe80::/10)",
        [x, ..] if x & 0xffc0 == 0xfec0 => "site-local (fec0::/10, deprecated)",
        [x, ..] if x & 0xff00 == 0xff00 => "multicast (ff00::/8)",
        _ => return None,
    })
}

/// The deployment's rules for notification targets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressRules {
    /// Special-purpose ranges notifications may go to anyway (tests and the demo allow
    /// `127.0.0.0/8`; a deployment whose merchants sit on a private network lists it).
    pub allow_private: Vec<Cidr>,
    /// Plain `http://` URLs are accepted (default: `https://` only).
    pub allow_http: bool,
}

impl EgressRules {
    /// Parses `allow_private` ranges.
    pub fn new<S: AsRef<str>>(allow_private: &[S], allow_http: bool) -> Result<EgressRules> {
        Ok(EgressRules {
            allow_private: allow_private
                .iter()
                .map(|c| c.as_ref().parse())
                .collect::<Result<_>>()?,
            allow_http,
        })
    }

    /// `NOTIFY_URL_FORBIDDEN` unless `ip` is a public unicast address or in an allowed range.
    /// `host` names what the URL said (for the message).
    pub fn check_ip(&self, host: &str, ip: IpAddr) -> Result<()> {
        let Some(range) = special_purpose(ip) else {
            return Ok(());
        };
        if self.allow_private.iter().any(|c| c.contains(ip)) {
            return Ok(());
        }
        Err(Error::new(
            ErrorCode::NotifyUrlForbidden,
            format!(
                "notify_url: {} {}{ip}, a {range} address; notifications go to public addresses \
                 only (a deployment may allow a range with notify.allow_private)",
                echo(host),
                if host.trim_matches(['[', ']']).parse::<IpAddr>() == Ok(ip) {
                    "is "
                } else {
                    "resolves to "
                },
            ),
        ))
    }

    /// `NOTIFY_URL_FORBIDDEN` for a scheme other than `https` (or `http` when allowed).
    pub fn check_scheme(&self, scheme: &str) -> Result<()> {
        match scheme {
            "https" => Ok(()),
            "http" if self.allow_http => Ok(()),
            "http" => Err(Error::new(
                ErrorCode::NotifyUrlForbidden,
                "notify_url: plain http:// is not allowed; use https:// (a deployment may allow \
                 http with notify.allow_http)",
            )),
            other => Err(Error::new(
                ErrorCode::NotifyUrlForbidden,
                format!("notify_url: scheme {} is not https", echo(other)),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn special_purpose_ranges_are_named_and_public_addresses_pass() {
        for special in [
            "0.0.0.0",
            "0.1.2.3",
            "10.1.2.3",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "127.8.9.10",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:8.8.8.8",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "2001::1",
            "2001:db8::1",
            "2002:7f00:1::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
        ] {
            assert!(special_purpose(ip(special)).is_some(), "{special}");
        }
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.1",
            "172.15.0.1",
            "172.32.0.1",
            "192.169.0.1",
            "223.255.255.255",
            "2400:cb00::1",
            "2606:4700::1111",
            "2001:4860:4860::8888",
        ] {
            assert_eq!(special_purpose(ip(public)), None, "{public}");
        }
    }

    #[test]
    fn ranges_parse_strictly_and_match_mapped_addresses() {
        let loopback: Cidr = "127.0.0.0/8".parse().unwrap();
        assert!(loopback.contains(ip("127.0.0.1")));
        assert!(loopback.contains(ip("::ffff:127.0.0.1")));
        assert!(!loopback.contains(ip("128.0.0.1")));
        let one: Cidr = "::1".parse().unwrap();
        assert!(one.contains(ip("::1")));
        assert!(!one.contains(ip("::2")));
        let cgnat: Cidr = "100.64.0.0/10".parse().unwrap();
        assert!(cgnat.contains(ip("100.127.0.1")));
        assert!(!cgnat.contains(ip("100.128.0.1")));
        for bad in [
            "127.0.0.1/8",
            "10.0.0.0/33",
            "x/8",
            "",
            "10.0.0.0/-1",
            "::1/129",
        ] {
            let e = bad.parse::<Cidr>().unwrap_err();
            assert!(e.message.starts_with("notify.allow_private"), "{bad}");
        }
        assert_eq!("fd00::/8".parse::<Cidr>().unwrap().to_string(), "fd00::/8");
    }

    #[test]
    fn rules_refuse_with_a_stable_code_unless_allowed() {
        let strict = EgressRules::default();
        let e = strict.check_ip("127.0.0.1", ip("127.0.0.1")).unwrap_err();
        assert_eq!(e.code, ErrorCode::NotifyUrlForbidden);
        assert!(
            e.message.contains("is 127.0.0.1, a loopback"),
            "{}",
            e.message
        );
        let e = strict.check_ip("shop.test", ip("10.0.0.5")).unwrap_err();
        assert!(
            e.message.contains("\"shop.test\" resolves to 10.0.0.5"),
            "{}",
            e.message
        );
        assert!(strict.check_ip("dns.google", ip("8.8.8.8")).is_ok());
        assert_eq!(
            strict.check_scheme("http").unwrap_err().code,
            ErrorCode::NotifyUrlForbidden
        );
        assert!(strict.check_scheme("https").is_ok());
        assert!(strict.check_scheme("ftp").is_err());

        let tests = EgressRules::new(&["127.0.0.0/8"], true).unwrap();
        assert!(tests.check_ip("localhost", ip("127.0.0.1")).is_ok());
        assert!(tests.check_ip("x", ip("::ffff:127.0.0.1")).is_ok());
        assert!(tests.check_ip("x", ip("10.0.0.1")).is_err());
        assert!(tests.check_ip("x", ip("::1")).is_err());
        assert!(tests.check_scheme("http").is_ok());
        assert!(EgressRules::new(&["nonsense"], false).is_err());
    }
}
