//! The cluster's state in Redis: node leases and room placements, each changed by one script
//! so that every decision is atomic.
//!
//! Keys (all with the hash tag `{tag}`, so they live in one slot and the scripts run on Redis
//! Cluster too):
//!
//! | key | value | expiry |
//! |---|---|---|
//! | `{tag}:node:<id>` | the node's record (JSON, [`NodeRecord`]) | the lease, renewed every heartbeat |
//! | `{tag}:nodes` | set of node ids (an index; ids whose lease is gone are pruned when read) | none |
//! | `{tag}:room:<room>` | hash: `node`, `inc` (its incarnation), `epoch` | the room lease, renewed by its owner |
//! | `{tag}:epoch` | counter, one step per placement | none |
//!
//! A placement is valid while its node's lease holds the same incarnation: a node that died or
//! restarted loses its rooms the moment its lease is gone, without anyone deleting them. Every
//! change to a room compares owner, incarnation and epoch first, so a node that lost a room
//! (paused, partitioned) can neither renew nor delete what another node now owns.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, ScriptInvocation, Value};

use super::record::NodeRecord;
use crate::config::ClusterConfig;

/// Renews the node's lease and lists it in the index.
/// KEYS: node key, index. ARGV: id, record, lease in ms.
const HEARTBEAT: &str = r"
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
return 1
";

/// The records of every live node; ids whose lease is gone leave the index.
/// KEYS: index. ARGV: node key prefix.
const NODES: &str = r"
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local record = redis.call('GET', ARGV[1] .. id)
  if record then
    table.insert(out, record)
  else
    redis.call('SREM', KEYS[1], id)
  end
end
return out
";

/// Shared by the room scripts: `live_owner` is the record of a room's owner if that owner's
/// lease still holds the room's incarnation, else nil; `place` gives a room to a node at a new
/// epoch and returns the epoch (a string).
const PRELUDE: &str = r"
local function live_owner(prefix, node, inc)
  if not node then return nil end
  local record = redis.call('GET', prefix .. node)
  if not record then return nil end
  local ok, decoded = pcall(cjson.decode, record)
  if ok and decoded.incarnation == inc then return record end
  return nil
end
local function place(room_key, epoch_key, node, inc, ttl)
  local epoch = redis.call('INCR', epoch_key)
  redis.call('DEL', room_key)
  redis.call('HSET', room_key, 'node', node, 'inc', inc, 'epoch', epoch)
  redis.call('PEXPIRE', room_key, ttl)
  return tostring(epoch)
end
";

/// A live owner keeps its room; otherwise the candidate (if its lease holds the incarnation
/// given) takes it with a new epoch.
/// KEYS: room key, epoch key. ARGV: node key prefix, candidate id, candidate incarnation, room
/// lease in ms. Returns {owner record, epoch} or nil when the candidate is not live.
const CLAIM: &str = r"
local owner = redis.call('HMGET', KEYS[1], 'node', 'inc', 'epoch')
local record = live_owner(ARGV[1], owner[1], owner[2])
if record then return {record, owner[3]} end
record = live_owner(ARGV[1], ARGV[2], ARGV[3])
if not record then return nil end
return {record, place(KEYS[1], KEYS[2], ARGV[2], ARGV[3], ARGV[4])}
";

/// The owner renews its room. Still its own: extend. Gone (expired, flushed) or owned by a node
/// that is no longer live: take it back with a new epoch. Owned by another live node: lost.
/// KEYS: room key, epoch key. ARGV: node key prefix, id, incarnation, epoch, room lease in ms.
/// Returns {'kept', epoch} | {'reclaimed', epoch} | {'lost', owner record}.
const RENEW: &str = r"
local owner = redis.call('HMGET', KEYS[1], 'node', 'inc', 'epoch')
if owner[1] == ARGV[2] and owner[2] == ARGV[3] and owner[3] == ARGV[4] then
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  return {'kept', ARGV[4]}
end
local record = live_owner(ARGV[1], owner[1], owner[2])
if record and not (owner[1] == ARGV[2] and owner[2] == ARGV[3]) then
  return {'lost', record}
end
return {'reclaimed', place(KEYS[1], KEYS[2], ARGV[2], ARGV[3], ARGV[5])}
";

/// Hands a room this node owns at this epoch to another live node, with a new epoch (a drain).
/// KEYS: room key, epoch key. ARGV: node key prefix, id, incarnation, epoch, target id, target
/// incarnation, room lease in ms. Returns {target record, epoch} or nil.
const HAND_OVER: &str = r"
local owner = redis.call('HMGET', KEYS[1], 'node', 'inc', 'epoch')
if not (owner[1] == ARGV[2] and owner[2] == ARGV[3] and owner[3] == ARGV[4]) then
  return nil
end
local record = live_owner(ARGV[1], ARGV[5], ARGV[6])
if not record then return nil end
return {record, place(KEYS[1], KEYS[2], ARGV[5], ARGV[6], ARGV[7])}
";

/// Deletes a room only if this node still owns it at this epoch.
/// KEYS: room key. ARGV: id, incarnation, epoch. Returns 1 if deleted.
const RELEASE: &str = r"
local owner = redis.call('HMGET', KEYS[1], 'node', 'inc', 'epoch')
if owner[1] == ARGV[1] and owner[2] == ARGV[2] and owner[3] == ARGV[3] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
";

/// Deletes the node's lease only if it is still this incarnation's.
/// KEYS: node key, index. ARGV: id, incarnation.
const UNREGISTER: &str = r"
local record = redis.call('GET', KEYS[1])
if record then
  local ok, decoded = pcall(cjson.decode, record)
  if ok and decoded.incarnation == ARGV[2] then
    redis.call('DEL', KEYS[1])
    redis.call('SREM', KEYS[2], ARGV[1])
    return 1
  end
end
return 0
";

/// What a renewal found.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Renewed {
    /// Still ours, at this epoch.
    Kept(u64),
    /// It was gone (expired, flushed, or its recorded owner is dead): ours again at a new epoch.
    Reclaimed(u64),
    /// Another live node owns it now.
    Lost(NodeRecord),
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    /// Redis could not be reached or refused the command.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A script answered something it never answers, or a record does not decode.
    #[error("unexpected answer from redis: {0}")]
    Unexpected(String),
}

/// The scripts and the connection.
#[derive(Clone)]
pub(crate) struct Store {
    conn: ConnectionManager,
    tag: String,
    heartbeat: Script,
    nodes: Script,
    claim: Script,
    renew: Script,
    hand_over: Script,
    release: Script,
    unregister: Script,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("tag", &self.tag).finish()
    }
}

impl Store {
    /// A store on `config.redis_url`; the connection is made on first use and remade in the
    /// background when it breaks (each command then fails fast, within the timeouts).
    pub(crate) fn new(config: &ClusterConfig, url: &str) -> anyhow::Result<Store> {
        let client = match &config.redis_ca {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    anyhow::anyhow!("cluster.redis_ca: cannot read {}: {e}", path.display())
                })?;
                let certificates = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                };
                redis::Client::build_with_tls(url, certificates)?
            }
            None => redis::Client::open(url)?,
        };
        let timeout = config.heartbeat.max(std::time::Duration::from_millis(250));
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(config.heartbeat);
        let conn = client.get_connection_manager_lazy(manager)?;
        Ok(Store {
            conn,
            tag: config.key_tag.clone(),
            heartbeat: Script::new(HEARTBEAT),
            nodes: Script::new(NODES),
            claim: Script::new(&format!("{PRELUDE}{CLAIM}")),
            renew: Script::new(&format!("{PRELUDE}{RENEW}")),
            hand_over: Script::new(&format!("{PRELUDE}{HAND_OVER}")),
            release: Script::new(RELEASE),
            unregister: Script::new(UNREGISTER),
        })
    }

    fn node_prefix(&self) -> String {
        format!("{{{}}}:node:", self.tag)
    }

    fn node_key(&self, id: &str) -> String {
        format!("{{{}}}:node:{id}", self.tag)
    }

    fn index_key(&self) -> String {
        format!("{{{}}}:nodes", self.tag)
    }

    fn room_key(&self, room: &str) -> String {
        format!("{{{}}}:room:{room}", self.tag)
    }

    fn epoch_key(&self) -> String {
        format!("{{{}}}:epoch", self.tag)
    }

    /// A call of `script` about `room` by `node`, with what the claim, renew and hand-over
    /// scripts all begin with: the room and epoch keys, the node-key prefix, the node's id and
    /// incarnation.
    fn room_call<'a>(
        &self,
        script: &'a Script,
        room: &str,
        node: &NodeRecord,
    ) -> ScriptInvocation<'a> {
        let mut call = script.prepare_invoke();
        call.key(self.room_key(room))
            .key(self.epoch_key())
            .arg(self.node_prefix())
            .arg(&node.id)
            .arg(&node.incarnation);
        call
    }

    /// Renews `me`'s lease for `lease_ms`.
    pub(crate) async fn heartbeat(&self, me: &NodeRecord, lease_ms: u64) -> Result<(), StoreError> {
        let record =
            serde_json::to_string(me).map_err(|e| StoreError::Unexpected(e.to_string()))?;
        let mut conn = self.conn.clone();
        let _: i64 = self
            .heartbeat
            .key(self.node_key(&me.id))
            .key(self.index_key())
            .arg(&me.id)
            .arg(record)
            .arg(lease_ms)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Every live node's record.
    pub(crate) async fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let mut conn = self.conn.clone();
        let records: Vec<String> = self
            .nodes
            .key(self.index_key())
            .arg(self.node_prefix())
            .invoke_async(&mut conn)
            .await?;
        // A record that does not decode (another version's) is skipped, not fatal.
        Ok(records
            .iter()
            .filter_map(|r| serde_json::from_str(r).ok())
            .collect())
    }

    /// The owner of `room` and its epoch: its live owner, else `candidate` (now). `None` when
    /// `candidate`'s lease is gone.
    pub(crate) async fn claim(
        &self,
        room: &str,
        candidate: &NodeRecord,
        room_lease_ms: u64,
    ) -> Result<Option<(NodeRecord, u64)>, StoreError> {
        let mut conn = self.conn.clone();
        let answer: Value = self
            .room_call(&self.claim, room, candidate)
            .arg(room_lease_ms)
            .invoke_async(&mut conn)
            .await?;
        match answer {
            Value::Nil => Ok(None),
            Value::Array(items) => {
                let [record, epoch] = two_strings(items)?;
                Ok(Some((decode(&record)?, parse_epoch(&epoch)?)))
            }
            other => Err(StoreError::Unexpected(format!("claim answered {other:?}"))),
        }
    }

    /// Renews `room`, owned by `me` at `epoch`.
    pub(crate) async fn renew(
        &self,
        room: &str,
        me: &NodeRecord,
        epoch: u64,
        room_lease_ms: u64,
    ) -> Result<Renewed, StoreError> {
        let mut conn = self.conn.clone();
        let answer: Vec<String> = self
            .room_call(&self.renew, room, me)
            .arg(epoch.to_string())
            .arg(room_lease_ms)
            .invoke_async(&mut conn)
            .await?;
        match answer.as_slice() {
            [what, epoch] if what == "kept" => Ok(Renewed::Kept(parse_epoch(epoch)?)),
            [what, epoch] if what == "reclaimed" => Ok(Renewed::Reclaimed(parse_epoch(epoch)?)),
            [what, record] if what == "lost" => Ok(Renewed::Lost(decode(record)?)),
            other => Err(StoreError::Unexpected(format!("renew answered {other:?}"))),
        }
    }

    /// Gives `room`, owned by `me` at `epoch`, to `to` (if `to` is live); `to`'s record.
    pub(crate) async fn hand_over(
        &self,
        room: &str,
        me: &NodeRecord,
        epoch: u64,
        to: &NodeRecord,
        room_lease_ms: u64,
    ) -> Result<Option<NodeRecord>, StoreError> {
        let mut conn = self.conn.clone();
        let answer: Value = self
            .room_call(&self.hand_over, room, me)
            .arg(epoch.to_string())
            .arg(&to.id)
            .arg(&to.incarnation)
            .arg(room_lease_ms)
            .invoke_async(&mut conn)
            .await?;
        match answer {
            Value::Nil => Ok(None),
            Value::Array(items) => {
                let [record, _epoch] = two_strings(items)?;
                Ok(Some(decode(&record)?))
            }
            other => Err(StoreError::Unexpected(format!(
                "hand-over answered {other:?}"
            ))),
        }
    }

    /// Deletes `room` if `me` still owns it at `epoch`; whether it did.
    pub(crate) async fn release(
        &self,
        room: &str,
        me: &NodeRecord,
        epoch: u64,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let deleted: i64 = self
            .release
            .key(self.room_key(room))
            .arg(&me.id)
            .arg(&me.incarnation)
            .arg(epoch.to_string())
            .invoke_async(&mut conn)
            .await?;
        Ok(deleted == 1)
    }

    /// Deletes `me`'s lease if it is still this incarnation's.
    pub(crate) async fn unregister(&self, me: &NodeRecord) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let deleted: i64 = self
            .unregister
            .key(self.node_key(&me.id))
            .key(self.index_key())
            .arg(&me.id)
            .arg(&me.incarnation)
            .invoke_async(&mut conn)
            .await?;
        Ok(deleted == 1)
    }
}

fn two_strings(items: Vec<Value>) -> Result<[String; 2], StoreError> {
    let strings: Vec<String> = items
        .into_iter()
        .map(|v| redis::from_redis_value(v).map_err(|e| StoreError::Unexpected(e.to_string())))
        .collect::<Result<_, _>>()?;
    <[String; 2]>::try_from(strings)
        .map_err(|v| StoreError::Unexpected(format!("{} items where 2 were expected", v.len())))
}

fn decode(record: &str) -> Result<NodeRecord, StoreError> {
    serde_json::from_str(record).map_err(|e| StoreError::Unexpected(format!("node record: {e}")))
}

fn parse_epoch(epoch: &str) -> Result<u64, StoreError> {
    epoch
        .parse()
        .map_err(|_| StoreError::Unexpected(format!("epoch {epoch:?}")))
}
