//! Where the relay may send: the peer address policy.
//!
//! A TURN relay sends UDP on behalf of whoever holds a credential, from inside the operator's
//! network. Left open it reaches cloud metadata services, internal hosts and loopback services.
//! The policy, in order:
//!
//! 1. a peer that is exactly one of this node's own media addresses (the WebRTC port, on whatever
//!    address it is bound) is allowed — that is what the relay is for;
//! 2. every other peer is checked against a deny-list that no configuration lifts: loopback,
//!    unspecified, private ranges, shared address space (CGNAT `100.64/10`), link-local (which
//!    holds the metadata address `169.254.169.254`), multicast, broadcast, reserved,
//!    documentation and benchmarking ranges, IPv6 unique-local and site-local, and every IPv6
//!    form that embeds an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible
//!    `::a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`), judged by the address it embeds;
//! 3. what remains is allowed only when an allow-list entry contains it. The allow-list is empty
//!    by default, so by default the relay reaches this node's media addresses and nothing else.
//!
//! Permissions in TURN are per IP address (RFC 8656 §9), so `CreatePermission` is checked with
//! [`PeerPolicy::check_ip`]; every packet is checked again with the full address
//! ([`PeerPolicy::check`]) before it leaves, so a permission for this node's media IP does not
//! open its other ports.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use thiserror::Error;

/// Why a peer address was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Denial {
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// `0.0.0.0/8`, `::`.
    Unspecified,
    /// `10/8`, `172.16/12`, `192.168/16`.
    Private,
    /// `100.64/10` (carrier-grade NAT).
    SharedAddressSpace,
    /// `169.254/16` (cloud metadata lives here), `fe80::/10`.
    LinkLocal,
    /// `224/4`, `ff00::/8`.
    Multicast,
    /// `fc00::/7` unique-local and `fec0::/10` site-local.
    UniqueLocal,
    /// `240/4` and broadcast, `192.0.0/24`, documentation and benchmarking ranges, and other
    /// special-purpose blocks.
    Reserved,
    /// Not one of this node's media addresses and not in the allow-list.
    NotAllowed,
}

impl Denial {
    /// The label value (snake case).
    pub fn as_str(self) -> &'static str {
        match self {
            Denial::Loopback => "loopback",
            Denial::Unspecified => "unspecified",
            Denial::Private => "private",
            Denial::SharedAddressSpace => "shared_address_space",
            Denial::LinkLocal => "link_local",
            Denial::Multicast => "multicast",
            Denial::UniqueLocal => "unique_local",
            Denial::Reserved => "reserved",
            Denial::NotAllowed => "not_allowed",
        }
    }

    /// Every reason, for tables and metrics.
    pub const ALL: [Denial; 9] = [
        Denial::Loopback,
        Denial::Unspecified,
        Denial::Private,
        Denial::SharedAddressSpace,
        Denial::LinkLocal,
        Denial::Multicast,
        Denial::UniqueLocal,
        Denial::Reserved,
        Denial::NotAllowed,
    ];
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An address block, `192.0.2.0/24` or `2001:db8::/32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// A block that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("`{0}` is not an address block like 203.0.113.0/24 or 2001:db8::/32")]
pub struct CidrError(String);

impl Cidr {
    /// A block; the prefix must fit the family.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    /// Whether `ip` is inside (same family only).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
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
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let err = || CidrError(s.to_owned());
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (
                a.parse::<IpAddr>().map_err(|_| err())?,
                p.parse::<u8>().map_err(|_| err())?,
            ),
            None => {
                let a = s.parse::<IpAddr>().map_err(|_| err())?;
                (a, if a.is_ipv4() { 32 } else { 128 })
            }
        };
        Cidr::new(addr, prefix).ok_or_else(err)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The peer policy of one node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerPolicy {
    media: Vec<SocketAddr>,
    allow: Vec<Cidr>,
}

impl PeerPolicy {
    /// This node's media addresses (allowed exactly) and the allow-list (which the deny-list
    /// still overrides).
    pub fn new(media: Vec<SocketAddr>, allow: Vec<Cidr>) -> PeerPolicy {
        PeerPolicy { media, allow }
    }

    /// This node's media addresses.
    pub fn media_addresses(&self) -> &[SocketAddr] {
        &self.media
    }

    /// Whether a permission for `ip` may be installed (TURN permissions ignore the port).
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Denial> {
        if self.media.iter().any(|m| m.ip() == ip) {
            return Ok(());
        }
        self.check_other(ip)
    }

    /// Whether a packet may be sent to `peer`.
    pub fn check(&self, peer: SocketAddr) -> Result<(), Denial> {
        if self.media.contains(&peer) {
            return Ok(());
        }
        self.check_other(peer.ip())
    }

    fn check_other(&self, ip: IpAddr) -> Result<(), Denial> {
        if let Some(denial) = deny_reason(ip) {
            return Err(denial);
        }
        if self.allow.iter().any(|c| c.contains(ip)) {
            Ok(())
        } else {
            Err(Denial::NotAllowed)
        }
    }
}

/// The deny-list: why `ip` is never a relay peer (unless it is one of this node's own media
/// addresses), or `None` for a global unicast address.
pub fn deny_reason(ip: IpAddr) -> Option<Denial> {
    match ip {
        IpAddr::V4(v4) => deny_v4(v4),
        IpAddr::V6(v6) => deny_v6(v6),
    }
}

fn deny_v4(ip: Ipv4Addr) -> Option<Denial> {
    let [a, b, c, _] = ip.octets();
    let denial = match (a, b) {
        (0, _) => Denial::Unspecified,
        (127, _) => Denial::Loopback,
        (10, _) => Denial::Private,
        (172, 16..=31) | (192, 168) => Denial::Private,
        (100, 64..=127) => Denial::SharedAddressSpace,
        (169, 254) => Denial::LinkLocal,
        (224..=239, _) => Denial::Multicast,
        (240..=255, _) => Denial::Reserved,
        // 198.18.0.0/15: benchmarking.
        (198, 18..=19) => Denial::Reserved,
        // 192.0.0.0/24 protocol assignments, 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24
        // documentation, 192.88.99.0/24 former 6to4 relay anycast.
        (192, 0) if c == 0 || c == 2 => Denial::Reserved,
        (198, 51) if c == 100 => Denial::Reserved,
        (203, 0) if c == 113 => Denial::Reserved,
        (192, 88) if c == 99 => Denial::Reserved,
        _ => return None,
    };
    Some(denial)
}

fn deny_v6(ip: Ipv6Addr) -> Option<Denial> {
    let s = ip.segments();
    let o = ip.octets();
    if ip.is_unspecified() {
        return Some(Denial::Unspecified);
    }
    if ip.is_loopback() {
        return Some(Denial::Loopback);
    }
    let embedded = |bytes: &[u8]| Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]);
    // IPv4-mapped ::ffff:a.b.c.d and IPv4-compatible ::a.b.c.d (deprecated, still routable by
    // some stacks): judge the IPv4 address. A global IPv4 inside is still refused: the relay
    // socket is IPv4 and the canonical form is the one to ask for.
    if s[..5] == [0; 5] && (s[5] == 0xffff || s[5] == 0) {
        return Some(deny_v4(embedded(&o[12..])).unwrap_or(Denial::Reserved));
    }
    // NAT64 well-known prefix 64:ff9b::/96 and the local-use 64:ff9b:1::/48.
    if s[0] == 0x64 && s[1] == 0xff9b {
        return Some(deny_v4(embedded(&o[12..])).unwrap_or(Denial::Reserved));
    }
    // 6to4 2002:AABB:CCDD::/48 embeds AA.BB.CC.DD.
    if s[0] == 0x2002 {
        return Some(deny_v4(embedded(&o[2..6])).unwrap_or(Denial::Reserved));
    }
    let denial = match s[0] {
        0xff00..=0xffff => Denial::Multicast,
        0xfe80..=0xfebf => Denial::LinkLocal,
        0xfec0..=0xfeff => Denial::UniqueLocal,
        0xfc00..=0xfdff => Denial::UniqueLocal,
        // 2001:db8::/32 documentation, 2001::/23 special-purpose (Teredo, ORCHID, benchmarking),
        // 100::/64 discard, 3fff::/20 documentation.
        0x2001 if s[1] == 0x0db8 || s[1] < 0x0200 => Denial::Reserved,
        0x0100 if s[1..4] == [0, 0, 0] => Denial::Reserved,
        0x3fff if s[1] < 0x1000 => Denial::Reserved,
        // Everything outside 2000::/3 is unassigned or special.
        x if !(0x2000..=0x3fff).contains(&x) => Denial::Reserved,
        _ => return None,
    };
    Some(denial)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn media() -> SocketAddr {
        "127.0.0.1:4478".parse().unwrap()
    }

    #[test]
    fn every_denied_form_is_refused_even_when_allow_listed() {
        let allow_all = vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()];
        // The media address is elsewhere on loopback: 127.0.0.1 itself must be denied.
        let policy = PeerPolicy::new(vec!["127.0.0.9:4478".parse().unwrap()], allow_all);
        let table = [
            ("127.0.0.1", Denial::Loopback),
            ("127.1.2.3", Denial::Loopback),
            ("::ffff:127.0.0.1", Denial::Loopback),
            ("::127.0.0.1", Denial::Loopback),
            ("0.0.0.0", Denial::Unspecified),
            ("::", Denial::Unspecified),
            ("::1", Denial::Loopback),
            ("169.254.169.254", Denial::LinkLocal),
            ("::ffff:169.254.169.254", Denial::LinkLocal),
            ("100.64.0.1", Denial::SharedAddressSpace),
            ("100.127.255.255", Denial::SharedAddressSpace),
            ("10.0.0.1", Denial::Private),
            ("172.16.0.1", Denial::Private),
            ("172.31.255.1", Denial::Private),
            ("192.168.1.1", Denial::Private),
            ("::ffff:10.0.0.1", Denial::Private),
            ("::ffff:192.168.0.1", Denial::Private),
            ("64:ff9b::10.0.0.1", Denial::Private),
            ("2002:a00:1::1", Denial::Private),
            ("fe80::1", Denial::LinkLocal),
            ("fc00::1", Denial::UniqueLocal),
            ("fd12:3456::1", Denial::UniqueLocal),
            ("fec0::1", Denial::UniqueLocal),
            ("224.0.0.1", Denial::Multicast),
            ("239.255.255.250", Denial::Multicast),
            ("ff02::1", Denial::Multicast),
            ("255.255.255.255", Denial::Reserved),
            ("192.0.2.1", Denial::Reserved),
            ("198.18.0.1", Denial::Reserved),
            ("2001:db8::1", Denial::Reserved),
            ("::ffff:8.8.8.8", Denial::Reserved),
        ];
        for (ip, reason) in table {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(policy.check_ip(ip), Err(reason), "{ip}");
            assert_eq!(
                policy.check(SocketAddr::new(ip, 4478)),
                Err(reason),
                "{ip}:4478"
            );
        }
    }

    #[test]
    fn the_nodes_media_address_is_allowed_and_only_its_port() {
        let policy = PeerPolicy::new(vec![media()], Vec::new());
        assert_eq!(policy.check(media()), Ok(()));
        assert_eq!(policy.check_ip(media().ip()), Ok(()));
        // The permission is per IP, but packets to the IP's other ports are refused.
        assert_eq!(
            policy.check("127.0.0.1:22".parse().unwrap()),
            Err(Denial::Loopback)
        );
        // The IPv4-mapped spelling of the media address is not the media address.
        assert_eq!(
            policy.check("[::ffff:127.0.0.1]:4478".parse().unwrap()),
            Err(Denial::Loopback)
        );
    }

    #[test]
    fn public_peers_need_the_allow_list() {
        let closed = PeerPolicy::new(vec![media()], Vec::new());
        let peer: SocketAddr = "8.8.8.8:3478".parse().unwrap();
        assert_eq!(closed.check(peer), Err(Denial::NotAllowed));
        let open = PeerPolicy::new(vec![media()], vec!["8.8.8.0/24".parse().unwrap()]);
        assert_eq!(open.check(peer), Ok(()));
        assert_eq!(
            open.check("8.8.9.8:1".parse().unwrap()),
            Err(Denial::NotAllowed)
        );
        let v6 = PeerPolicy::new(Vec::new(), vec!["2600::/12".parse().unwrap()]);
        assert_eq!(v6.check("[2606:4700::1]:443".parse().unwrap()), Ok(()));
    }

    #[test]
    fn cidr_parsing() {
        assert_eq!(
            "10.0.0.0/8".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("::/129".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
        let single: Cidr = "203.0.113.7".parse().unwrap();
        assert!(single.contains("203.0.113.7".parse().unwrap()));
        assert!(!single.contains("203.0.113.8".parse().unwrap()));
        let odd: Cidr = "100.64.0.0/10".parse().unwrap();
        assert!(odd.contains("100.127.1.1".parse().unwrap()));
        assert!(!odd.contains("100.128.0.0".parse().unwrap()));
        assert!(!odd.contains("::1".parse().unwrap()));
    }
}
