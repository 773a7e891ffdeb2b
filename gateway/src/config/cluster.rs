//! The `[cluster]` section of the configuration.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The shortest `cluster.peer_secret`, bytes.
pub const PEER_SECRET_MIN_LEN: usize = 32;

/// Several `strait serve` nodes sharing one Redis (see "Running a cluster" in
/// `docs/OPERATIONS.md`). Off unless `redis_url` is set: a single node needs nothing here.
///
/// Redis holds only each node's lease and each room's placement, changed by scripts fenced by
/// an epoch; a node that cannot reach Redis keeps serving the rooms it has.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `redis://[user:password@]host:port[/db]`, `rediss://…` for TLS, or
    /// `redis+unix:///path/to/socket` (a password in the URL is kept out of logs). Unset: one
    /// node.
    pub redis_url: Option<String>,
    /// With `rediss://`: a PEM file of the certificate authorities to trust for Redis's
    /// certificate, instead of the system's.
    pub redis_ca: Option<std::path::PathBuf>,
    /// This node's name in the cluster (`[A-Za-z0-9._-]`, 1 to 64 bytes). Unset: a random one
    /// per process.
    pub node_id: Option<String>,
    /// The host (name or IP address) clients of other nodes are redirected to. Unset: the QUIC
    /// listener's address (`127.0.0.1` when it listens on every address).
    pub public_host: Option<String>,
    /// A region label: a room without an owner goes to a node of the joining node's region when
    /// one has room.
    pub region: Option<String>,
    /// How often the node renews its lease (and publishes its load).
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// How long a node's lease lives without renewal: a node that stopped is known to be gone
    /// this long after its last renewal, and a node that could not renew for this long is
    /// unready.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// How long a room's placement lives without renewal by its owner (renewed every third of
    /// it); it is also void as soon as its owner's lease is gone.
    #[serde(with = "humantime_serde")]
    pub room_lease: Duration,
    /// A room without an owner is taken by the node that received the join while that node's
    /// load (the larger of its sessions' share of `limits.max_sessions` and its busiest media
    /// worker's busy ratio) is under this; otherwise by the less loaded of two other nodes.
    pub load_threshold: f64,
    /// How long the access token carried by a redirect is valid.
    #[serde(with = "humantime_serde")]
    pub redirect_token_ttl: Duration,
    /// The hash tag of every key (`{strait}:node:<id>`…): clusters sharing one Redis need
    /// different tags. One tag keeps every key in one slot, so the scripts run on Redis
    /// Cluster too.
    pub key_tag: String,
    /// The secret the nodes of a cluster prove to each other when they link (ALPN
    /// `strait-peer/1`, for rooms that span nodes): at least 32 bytes, the same on every node.
    /// Unset: the node offers no links and dials none.
    pub peer_secret: Option<String>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            redis_ca: None,
            node_id: None,
            public_host: None,
            region: None,
            heartbeat: Duration::from_secs(1),
            lease: Duration::from_secs(5),
            room_lease: Duration::from_secs(30),
            load_threshold: 0.7,
            redirect_token_ttl: Duration::from_secs(60),
            key_tag: "strait".into(),
            peer_secret: None,
        }
    }
}

impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("redis_ca", &self.redis_ca)
            .field("node_id", &self.node_id)
            .field("public_host", &self.public_host)
            .field("region", &self.region)
            .field("heartbeat", &self.heartbeat)
            .field("lease", &self.lease)
            .field("room_lease", &self.room_lease)
            .field("load_threshold", &self.load_threshold)
            .field("redirect_token_ttl", &self.redirect_token_ttl)
            .field("key_tag", &self.key_tag)
            .field(
                "peer_secret",
                &self.peer_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// `url` without the password of its user part.
pub(crate) fn redact_url(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://***{}", &url[at..]),
        _ => url.to_owned(),
    }
}

impl ClusterConfig {
    /// Whether this node is part of a cluster.
    pub fn enabled(&self) -> bool {
        self.redis_url.is_some()
    }

    /// Checks the section's rules.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(url) = &self.redis_url
            && !["redis://", "rediss://", "redis+unix://", "unix://"]
                .iter()
                .any(|scheme| url.starts_with(scheme))
        {
            return Err(format!(
                "cluster.redis_url must start with redis:// (rediss:// for TLS, redis+unix:// for \
                 a local socket; got {})",
                redact_url(url)
            ));
        }
        if self.redis_ca.is_some()
            && !self
                .redis_url
                .as_deref()
                .is_some_and(|u| u.starts_with("rediss://"))
        {
            return Err("cluster.redis_ca goes with a rediss:// cluster.redis_url".into());
        }
        if let Some(id) = &self.node_id
            && !valid_name(id)
        {
            return Err("cluster.node_id: 1 to 64 bytes of A-Z a-z 0-9 . _ -".into());
        }
        if !valid_name(&self.key_tag) {
            return Err("cluster.key_tag: 1 to 64 bytes of A-Z a-z 0-9 . _ -".into());
        }
        if self.region.as_ref().is_some_and(|r| !valid_name(r)) {
            return Err("cluster.region: 1 to 64 bytes of A-Z a-z 0-9 . _ -".into());
        }
        if self
            .peer_secret
            .as_ref()
            .is_some_and(|s| s.len() < PEER_SECRET_MIN_LEN)
        {
            return Err(format!(
                "cluster.peer_secret must be at least {PEER_SECRET_MIN_LEN} bytes"
            ));
        }
        if self.heartbeat < Duration::from_millis(50) {
            return Err("cluster.heartbeat must be at least 50ms".into());
        }
        if self.lease < 2 * self.heartbeat {
            return Err("cluster.lease must be at least twice cluster.heartbeat".into());
        }
        if self.room_lease < 3 * self.heartbeat {
            return Err("cluster.room_lease must be at least three cluster.heartbeat".into());
        }
        if !(self.load_threshold > 0.0 && self.load_threshold <= 1.0) {
            return Err("cluster.load_threshold must be in (0, 1]".into());
        }
        if self.redirect_token_ttl < Duration::from_secs(5) {
            return Err("cluster.redirect_token_ttl must be at least 5s".into());
        }
        Ok(())
    }
}

fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_the_redis_url_stays_out_of_debug_output() {
        let config = ClusterConfig {
            redis_url: Some("redis://user:hunter2@10.0.0.5:6379/0".into()),
            ..ClusterConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("@10.0.0.5:6379/0"), "{shown}");
    }

    #[test]
    fn timings_that_cannot_work_are_refused() {
        let lease = ClusterConfig {
            redis_url: Some("redis://127.0.0.1:6379".into()),
            lease: Duration::from_millis(1500),
            ..ClusterConfig::default()
        };
        assert!(lease.validate().unwrap_err().contains("cluster.lease"));
        let ca_without_tls = ClusterConfig {
            redis_url: Some("redis://127.0.0.1:6379".into()),
            redis_ca: Some("ca.pem".into()),
            ..ClusterConfig::default()
        };
        assert!(ca_without_tls.validate().unwrap_err().contains("redis_ca"));
        let scheme = ClusterConfig {
            redis_url: Some("http://127.0.0.1:6379".into()),
            ..ClusterConfig::default()
        };
        assert!(scheme.validate().unwrap_err().contains("redis://"));
        let id = ClusterConfig {
            node_id: Some("node 1".into()),
            ..ClusterConfig::default()
        };
        assert!(id.validate().unwrap_err().contains("node_id"));
        assert!(ClusterConfig::default().validate().is_ok());
    }
}
