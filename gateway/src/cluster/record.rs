//! What a node publishes about itself in its lease, and how a room without an owner finds one.
//!
//! Both are plain data and pure functions: the Redis side is in `store`, the timing in the
//! cluster task.

use serde::{Deserialize, Serialize};

/// A node's record, the value of its lease key (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct NodeRecord {
    /// The node's name in the cluster.
    pub(crate) id: String,
    /// Random per process, in hex: a restarted node is a new incarnation, and what the old one
    /// owned is void. A string so that the scripts compare it exactly.
    pub(crate) incarnation: String,
    /// Serving, or draining (takes no new rooms).
    pub(crate) state: NodeState,
    /// `host:port` of its QUIC port, for native clients.
    pub(crate) quic: String,
    /// `https://host:port/path` of its WebTransport endpoint.
    pub(crate) webtransport: String,
    /// `http://host:port` of its HTTP port (WHIP/WHEP, `/ws/rtc`).
    pub(crate) http: String,
    /// Its region label, if any.
    pub(crate) region: Option<String>,
    /// SHA-256 (lowercase hex) of the certificates it serves now and will serve next.
    pub(crate) cert_hashes: Vec<String>,
    /// Its load, from 0 (idle) to 1 (full): the larger of its sessions' share of its session
    /// limit and its busiest media worker's busy ratio.
    pub(crate) load: f64,
}

/// A node's state in its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum NodeState {
    /// Takes new rooms.
    Serving,
    /// Takes no new rooms; its rooms move away.
    Draining,
}

/// A node at or above this load is not a candidate for a new room.
pub(crate) const FULL: f64 = 0.9;

/// The node that should own a room that has none, as seen from `me` (the node that received
/// the join), among the live `nodes` (which may include `me`):
///
/// 1. `me`, if it is serving and its load is under `threshold`;
/// 2. otherwise the less loaded of two candidates drawn at random (with `draw(n)` in `0..n`)
///    among the serving nodes under [`FULL`] — of `me`'s region when that leaves any;
/// 3. otherwise `me` if it is serving and not full, else none (the cluster is full).
pub(crate) fn choose<'a>(
    me: &'a NodeRecord,
    nodes: &'a [NodeRecord],
    threshold: f64,
    mut draw: impl FnMut(usize) -> usize,
) -> Option<&'a NodeRecord> {
    let serving = me.state == NodeState::Serving;
    if serving && me.load < threshold {
        return Some(me);
    }
    let open = |n: &&NodeRecord| n.state == NodeState::Serving && n.load < FULL;
    let mut candidates: Vec<&NodeRecord> = nodes.iter().filter(open).collect();
    if me.region.is_some() && candidates.iter().any(|n| n.region == me.region) {
        candidates.retain(|n| n.region == me.region);
    }
    match candidates.len() {
        0 => (serving && me.load < FULL).then_some(me),
        1 => Some(candidates[0]),
        n => {
            let a = draw(n);
            let mut b = draw(n - 1);
            if b >= a {
                b += 1;
            }
            let (a, b) = (candidates[a], candidates[b]);
            Some(if b.load < a.load { b } else { a })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, load: f64, region: Option<&str>) -> NodeRecord {
        NodeRecord {
            id: id.into(),
            incarnation: "1".into(),
            state: NodeState::Serving,
            quic: String::new(),
            webtransport: String::new(),
            http: String::new(),
            region: region.map(Into::into),
            cert_hashes: Vec::new(),
            load,
        }
    }

    #[test]
    fn a_node_under_its_threshold_takes_the_room_itself() {
        let me = node("a", 0.2, None);
        let nodes = [node("a", 0.2, None), node("b", 0.0, None)];
        assert_eq!(choose(&me, &nodes, 0.7, |_| 0).unwrap().id, "a");
    }

    #[test]
    fn a_loaded_node_gives_the_room_to_the_less_loaded_of_two_others() {
        let me = node("a", 0.8, None);
        let nodes = [
            node("a", 0.8, None),
            node("b", 0.5, None),
            node("c", 0.1, None),
        ];
        // Draws "b" then "c": "c" is less loaded.
        let mut draws = [1, 1].into_iter();
        let chosen = choose(&me, &nodes, 0.7, |_| draws.next().unwrap());
        assert_eq!(chosen.unwrap().id, "c");
    }

    #[test]
    fn draining_and_full_nodes_are_never_chosen_and_regions_are_kept() {
        let mut me = node("a", 0.95, Some("eu"));
        let mut draining = node("b", 0.0, Some("eu"));
        draining.state = NodeState::Draining;
        let nodes = [
            me.clone(),
            draining,
            node("c", 0.3, Some("us")),
            node("d", 0.6, Some("eu")),
        ];
        for first in 0..2 {
            let chosen = choose(&me, &nodes, 0.7, |n| first.min(n - 1)).unwrap();
            assert_eq!(chosen.id, "d", "the only open node of the region");
        }
        me.state = NodeState::Draining;
        let full = [me.clone(), node("e", 0.95, None)];
        assert!(choose(&me, &full, 0.7, |_| 0).is_none());
    }
}
