//! The `[turn]` section of the configuration.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strait_media::turn::Cidr;

/// The embedded TURN server, or credentials for an external one.
///
/// Off by default. When on, the relay reaches this node's `media_addresses` and, beyond them,
/// only allow-listed addresses that are not on the built-in deny-list (loopback, private,
/// CGNAT, link-local and metadata, multicast, ULA, and their IPv6-embedded forms).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TurnConfig {
    /// Serve TURN on this node.
    pub enabled: bool,
    /// The listeners to open.
    pub transports: Vec<Listener>,
    /// UDP listener (RFC 8656 port 3478). Loopback by default.
    pub udp_listen: SocketAddr,
    /// TCP listener (port 3478).
    pub tcp_listen: SocketAddr,
    /// TLS listener (port 5349), with the gateway's certificate.
    pub tls_listen: SocketAddr,
    /// The address relay sockets bind to (one UDP port per allocation). Must be an address
    /// peers can reach; IPv4 only.
    pub relay_ip: IpAddr,
    /// The address put into `turn:` URLs handed to clients; the listener's address when unset.
    pub public_host: Option<String>,
    /// The STUN realm.
    pub realm: String,
    /// Shared secrets for TURN REST credentials (each at least 16 bytes). The first mints, all
    /// are accepted: to rotate, put the new secret first and remove the old one after one
    /// `credential_ttl`. Empty means a random secret per process.
    pub secrets: Vec<String>,
    /// How long minted credentials are valid.
    #[serde(with = "humantime_serde")]
    pub credential_ttl: Duration,
    /// Further media addresses of this node. The WebRTC bridge's port (at each address it
    /// advertises) is added by itself. These are the only peers the relay reaches without an
    /// allow-list.
    pub media_addresses: Vec<SocketAddr>,
    /// Further peer blocks the relay may reach (`203.0.113.0/24`, `0.0.0.0/0`). The deny-list
    /// still applies to them.
    pub allow: Vec<String>,
    /// Allocations on this node (each holds a UDP socket).
    pub max_allocations: usize,
    /// Allocations one identity (the part of a TURN REST username after its expiry) may hold
    /// at once, whichever credentials they were made with. Until 2026-12 this was
    /// `max_allocations_per_credential` and counted per username, so each freshly minted
    /// credential opened a fresh quota; the old name is still read (setting both is an error).
    #[serde(alias = "max_allocations_per_credential")]
    pub max_allocations_per_identity: usize,
    /// Lifetime granted when a client asks for less or nothing.
    #[serde(with = "humantime_serde")]
    pub default_lifetime: Duration,
    /// Longest lifetime granted per Allocate or Refresh.
    #[serde(with = "humantime_serde")]
    pub max_lifetime: Duration,
    /// Relayed bytes per second per allocation, both directions together; 0 is unlimited.
    pub bandwidth_per_allocation: u64,
    /// 401/438 replies per second to one source IP (bounds reflection toward spoofed sources).
    pub unauthorized_per_second: u32,
    /// Burst of those replies above the rate.
    pub unauthorized_burst: u32,
    /// TCP and TLS connections at once (each costs a task and up to 128 KiB of buffers).
    pub max_stream_connections: usize,
    /// A TCP or TLS connection with no traffic either way for this long is closed.
    #[serde(with = "humantime_serde")]
    pub stream_idle_timeout: Duration,
    /// External TURN URLs (`turn:turn.example.com:3478?transport=udp`). When set, the gateway
    /// only mints credentials for them with `external_secret`; `enabled` must be false.
    pub external_urls: Vec<String>,
    /// The external server's shared secret (coturn `static-auth-secret`).
    pub external_secret: Option<String>,
}

impl Default for TurnConfig {
    fn default() -> Self {
        TurnConfig {
            enabled: false,
            transports: vec![Listener::Udp, Listener::Tcp, Listener::Tls],
            udp_listen: SocketAddr::from(([127, 0, 0, 1], 3478)),
            tcp_listen: SocketAddr::from(([127, 0, 0, 1], 3478)),
            tls_listen: SocketAddr::from(([127, 0, 0, 1], 5349)),
            relay_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            public_host: None,
            realm: "strait".into(),
            secrets: Vec::new(),
            credential_ttl: Duration::from_secs(300),
            media_addresses: Vec::new(),
            allow: Vec::new(),
            max_allocations: 1_000,
            max_allocations_per_identity: 8,
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3_600),
            bandwidth_per_allocation: 1_250_000,
            unauthorized_per_second: 10,
            unauthorized_burst: 20,
            max_stream_connections: 1_000,
            stream_idle_timeout: Duration::from_secs(300),
            external_urls: Vec::new(),
            external_secret: None,
        }
    }
}

impl fmt::Debug for TurnConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnConfig")
            .field("enabled", &self.enabled)
            .field("transports", &self.transports)
            .field("udp_listen", &self.udp_listen)
            .field("tcp_listen", &self.tcp_listen)
            .field("tls_listen", &self.tls_listen)
            .field("relay_ip", &self.relay_ip)
            .field("realm", &self.realm)
            .field(
                "secrets",
                &format_args!("<{} redacted>", self.secrets.len()),
            )
            .field("credential_ttl", &self.credential_ttl)
            .field("media_addresses", &self.media_addresses)
            .field("allow", &self.allow)
            .field("external_urls", &self.external_urls)
            .finish_non_exhaustive()
    }
}

/// A TURN listener kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Listener {
    /// UDP on `udp_listen`.
    Udp,
    /// TCP on `tcp_listen`.
    Tcp,
    /// TLS on `tls_listen`.
    Tls,
}

impl TurnConfig {
    /// The address of `listener` when it is enabled.
    pub fn listen(&self, listener: Listener) -> Option<SocketAddr> {
        if !self.enabled || !self.transports.contains(&listener) {
            return None;
        }
        Some(match listener {
            Listener::Udp => self.udp_listen,
            Listener::Tcp => self.tcp_listen,
            Listener::Tls => self.tls_listen,
        })
    }

    /// Checks the section's rules; the message names the broken one.
    pub fn validate(&self) -> Result<(), String> {
        if self.enabled && !self.external_urls.is_empty() {
            return Err("turn.enabled and turn.external_urls exclude each other".into());
        }
        if !self.external_urls.is_empty() {
            match &self.external_secret {
                Some(s) if s.len() >= 16 => {}
                _ => {
                    return Err(
                        "turn.external_urls need turn.external_secret (at least 16 bytes)".into(),
                    );
                }
            }
            if self.external_urls.len() > strait_protocol::limits::MAX_ICE_URLS {
                return Err(format!(
                    "turn.external_urls: at most {} (they travel in ServerHello)",
                    strait_protocol::limits::MAX_ICE_URLS
                ));
            }
            for url in &self.external_urls {
                if url.len() > strait_protocol::limits::MAX_URL_LEN {
                    return Err("turn.external_urls: a URL is too long".into());
                }
                if !(url.starts_with("turn:") || url.starts_with("turns:")) {
                    return Err(format!("turn.external_urls: `{url}` is not a turn: URL"));
                }
            }
        }
        if self
            .public_host
            .as_ref()
            .is_some_and(|h| h.is_empty() || h.len() > 253)
        {
            return Err("turn.public_host must be 1 to 253 bytes".into());
        }
        if self.secrets.iter().any(|s| s.len() < 16) {
            return Err("turn.secrets must each be at least 16 bytes".into());
        }
        if self.secrets.len() > 4 {
            return Err("turn.secrets: at most 4 (each is tried on every request)".into());
        }
        if self.credential_ttl < Duration::from_secs(10)
            || self.credential_ttl > Duration::from_secs(86_400)
        {
            return Err("turn.credential_ttl must be between 10s and 24h".into());
        }
        self.allow_list()?;
        if !self.enabled {
            return Ok(());
        }
        if self.transports.is_empty() {
            return Err("turn.enabled needs at least one of turn.transports".into());
        }
        if !self.relay_ip.is_ipv4() || self.relay_ip.is_unspecified() {
            return Err("turn.relay_ip must be a specific IPv4 address".into());
        }
        if self.realm.is_empty() || self.realm.len() > 127 {
            return Err("turn.realm must be 1 to 127 bytes".into());
        }
        for (name, v) in [
            ("turn.max_allocations", self.max_allocations),
            (
                "turn.max_allocations_per_identity",
                self.max_allocations_per_identity,
            ),
            ("turn.max_stream_connections", self.max_stream_connections),
        ] {
            if v == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if self.default_lifetime.is_zero() || self.max_lifetime < self.default_lifetime {
            return Err(
                "turn.default_lifetime must be positive and at most turn.max_lifetime".into(),
            );
        }
        if self.stream_idle_timeout < Duration::from_secs(1) {
            return Err("turn.stream_idle_timeout must be at least 1s".into());
        }
        Ok(())
    }

    /// The allow-list, parsed.
    pub fn allow_list(&self) -> Result<Vec<Cidr>, String> {
        self.allow
            .iter()
            .map(|s| s.parse::<Cidr>().map_err(|e| format!("turn.allow: {e}")))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_off_and_valid() {
        let config = TurnConfig::default();
        assert!(!config.enabled);
        assert_eq!(config.validate(), Ok(()));
        let on = TurnConfig {
            enabled: true,
            ..TurnConfig::default()
        };
        assert_eq!(on.validate(), Ok(()));
    }

    #[test]
    fn validation_names_the_broken_rule() {
        let check = |tweak: &dyn Fn(&mut TurnConfig), needle: &str| {
            let mut config = TurnConfig {
                enabled: true,
                ..TurnConfig::default()
            };
            tweak(&mut config);
            let err = config.validate().unwrap_err();
            assert!(err.contains(needle), "{err} should mention {needle}");
        };
        check(&|c| c.secrets = vec!["short".into()], "turn.secrets");
        check(&|c| c.allow = vec!["10.0.0.0/40".into()], "turn.allow");
        check(
            &|c| c.external_urls = vec!["turn:example.com".into()],
            "exclude",
        );
        check(&|c| c.relay_ip = "::1".parse().unwrap(), "relay_ip");
        check(&|c| c.max_allocations = 0, "turn.max_allocations");
        check(
            &|c| c.credential_ttl = Duration::from_secs(1),
            "credential_ttl",
        );
        check(&|c| c.transports.clear(), "at least one");
        let external = TurnConfig {
            external_urls: vec!["turn:turn.example.com:3478".into()],
            ..TurnConfig::default()
        };
        assert!(external.validate().unwrap_err().contains("external_secret"));
        let external = TurnConfig {
            external_secret: Some("s".repeat(16)),
            ..external
        };
        assert_eq!(external.validate(), Ok(()));
    }

    #[test]
    fn a_toml_section_parses_and_picks_listeners() {
        let config: TurnConfig = toml::from_str(
            "enabled = true\ntransports = [\"udp\", \"tls\"]\ncredential_ttl = \"2m\"\n\
             allow = [\"203.0.113.0/24\"]\nmedia_addresses = [\"127.0.0.1:4478\"]\n",
        )
        .unwrap();
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.credential_ttl, Duration::from_secs(120));
        assert_eq!(config.listen(Listener::Udp), Some(config.udp_listen));
        assert_eq!(config.listen(Listener::Tcp), None);
        assert!(toml::from_str::<TurnConfig>("transports = [\"sctp\"]").is_err());
        assert!(toml::from_str::<TurnConfig>("listen = 1").is_err());
    }

    #[test]
    fn the_identity_quota_is_also_read_under_its_old_name() {
        let new: TurnConfig = toml::from_str("max_allocations_per_identity = 3").unwrap();
        assert_eq!(new.max_allocations_per_identity, 3);
        let old: TurnConfig = toml::from_str("max_allocations_per_credential = 2").unwrap();
        assert_eq!(old.max_allocations_per_identity, 2);
        let both = toml::from_str::<TurnConfig>(
            "max_allocations_per_identity = 3\nmax_allocations_per_credential = 2",
        );
        assert!(both.is_err(), "{both:?}");
        let zero = TurnConfig {
            enabled: true,
            max_allocations_per_identity: 0,
            ..TurnConfig::default()
        };
        assert!(
            zero.validate()
                .unwrap_err()
                .contains("turn.max_allocations_per_identity")
        );
    }

    #[test]
    fn debug_output_hides_secrets() {
        let config = TurnConfig {
            secrets: vec!["x".repeat(20)],
            external_secret: Some("y".repeat(20)),
            ..TurnConfig::default()
        };
        let text = format!("{config:?}");
        assert!(!text.contains(&"x".repeat(20)) && !text.contains(&"y".repeat(20)));
    }
}
