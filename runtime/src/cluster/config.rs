//! [`NodeConfig`]: how a node process runs, from flags or a TOML file (flags win), every value
//! validated with a clear error.

use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::ids::NodeId;
use crate::replication::RaftTimings;
use crate::transport::frame::{DEFAULT_MAX_FRAME_BYTES, HANDSHAKE_MAX_FRAME_BYTES};
use crate::transport::{ClusterSecret, SecretError};

/// The settings of a node, as a TOML file or flags give them; every field optional, so flags
/// can fill or override what the file says.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSettings {
    /// This node's id (unique in the cluster, never reused by a node that lost its data).
    pub id: Option<u64>,
    /// The address to listen on.
    pub listen: Option<String>,
    /// The address others reach this node at (default: `listen`).
    pub advertise: Option<String>,
    /// The addresses of the cluster's nodes, the same list on every node; the first `managers`
    /// of them run the manager.
    pub peers: Option<Vec<String>>,
    /// Where this node keeps its Raft logs and snapshots.
    pub data_dir: Option<PathBuf>,
    /// The file holding the cluster secret.
    pub secret_file: Option<PathBuf>,
    /// Run without authentication (a test cluster on a trusted machine only).
    pub insecure: Option<bool>,
    /// How many of `peers` run the manager (odd; default 3, or 1 with fewer than 3 peers).
    pub managers: Option<usize>,
    /// How often a node heartbeats to the manager, in ms (default 100).
    pub heartbeat_ms: Option<u64>,
    /// Silence after which the manager declares a node down and moves its tasks, in ms
    /// (default 1000).
    pub node_timeout_ms: Option<u64>,
    /// How long a node must stay down before the manager moves its replicas of stateful
    /// tasks to other nodes, in ms (default 10000): a node that restarts within it keeps
    /// them (and resumes from its disk); one gone longer is replaced, so every group returns
    /// to its number of replicas. At least the node timeout.
    pub replace_after_ms: Option<u64>,
    /// The manager's Raft heartbeat, in ms (default 50).
    pub raft_heartbeat_ms: Option<u64>,
    /// The manager's shortest election timeout, in ms (default 150).
    pub raft_election_min_ms: Option<u64>,
    /// The manager's longest election timeout, in ms (default 300).
    pub raft_election_max_ms: Option<u64>,
    /// The Raft heartbeat of replicated stateful tasks' groups, in ms (default 30).
    pub group_heartbeat_ms: Option<u64>,
    /// Their shortest election timeout, in ms (default 100).
    pub group_election_min_ms: Option<u64>,
    /// Their longest election timeout, in ms (default 200). A follower campaigns this long
    /// plus a random election timeout after its leader's last message.
    pub group_election_max_ms: Option<u64>,
    /// The largest frame accepted from a peer, in bytes (default 16 MiB).
    pub max_frame_bytes: Option<usize>,
    /// Where to dial a peer instead of its address (`[routes]` in TOML, `"peer" = "via"`):
    /// for a port mapping between the nodes, or a fault-injecting proxy.
    pub routes: Option<std::collections::BTreeMap<String, String>>,
    /// Where each replica of a stateful task writes its final state when its run ends
    /// (`<dir>/<topology>-<run seed, 16 hex digits>/task-<task>.n<node>.state`, the state
    /// encoded with rmp-serde), for
    /// checking a run from outside. Off by default.
    pub state_export_dir: Option<PathBuf>,
}

impl NodeSettings {
    /// Reads settings from a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            why: e.to_string(),
        })
    }

    /// These settings, with every value `flags` sets taking precedence.
    pub fn overridden_by(self, flags: NodeSettings) -> NodeSettings {
        NodeSettings {
            id: flags.id.or(self.id),
            listen: flags.listen.or(self.listen),
            advertise: flags.advertise.or(self.advertise),
            peers: flags.peers.or(self.peers),
            data_dir: flags.data_dir.or(self.data_dir),
            secret_file: flags.secret_file.or(self.secret_file),
            insecure: flags.insecure.or(self.insecure),
            managers: flags.managers.or(self.managers),
            heartbeat_ms: flags.heartbeat_ms.or(self.heartbeat_ms),
            node_timeout_ms: flags.node_timeout_ms.or(self.node_timeout_ms),
            replace_after_ms: flags.replace_after_ms.or(self.replace_after_ms),
            raft_heartbeat_ms: flags.raft_heartbeat_ms.or(self.raft_heartbeat_ms),
            raft_election_min_ms: flags.raft_election_min_ms.or(self.raft_election_min_ms),
            raft_election_max_ms: flags.raft_election_max_ms.or(self.raft_election_max_ms),
            group_heartbeat_ms: flags.group_heartbeat_ms.or(self.group_heartbeat_ms),
            group_election_min_ms: flags.group_election_min_ms.or(self.group_election_min_ms),
            group_election_max_ms: flags.group_election_max_ms.or(self.group_election_max_ms),
            max_frame_bytes: flags.max_frame_bytes.or(self.max_frame_bytes),
            routes: flags.routes.or(self.routes),
            state_export_dir: flags.state_export_dir.or(self.state_export_dir),
        }
    }
}

/// Why a node's configuration is not usable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("could not read the config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for a node.
    #[error("the config file {path} is not valid: {why}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        why: String,
    },
    /// A required setting is missing.
    #[error("missing `{0}` (give it as a flag or in the config file)")]
    Missing(&'static str),
    /// A setting has a bad value.
    #[error("invalid `{field}` = {value}: {expected}")]
    Invalid {
        /// The setting.
        field: &'static str,
        /// The value given.
        value: String,
        /// What it should be.
        expected: String,
    },
    /// No secret and no `--insecure`.
    #[error(
        "no cluster secret: give --secret-file (at least 16 bytes, the same file on every node), \
         or --insecure to run without authentication"
    )]
    NoSecret,
    /// Both a secret and `--insecure`.
    #[error("--insecure and --secret-file contradict each other: give one")]
    SecretAndInsecure,
    /// The secret could not be loaded.
    #[error(transparent)]
    Secret(#[from] SecretError),
}

/// A node's validated configuration.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's id.
    pub id: NodeId,
    /// The address it listens on.
    pub listen: String,
    /// The address others reach it at.
    pub advertise: String,
    /// The cluster's nodes.
    pub peers: Vec<String>,
    /// How many of `peers` run the manager.
    pub managers: usize,
    /// Where it keeps its data.
    pub data_dir: PathBuf,
    /// The cluster secret (`None`: insecure).
    pub secret: Option<ClusterSecret>,
    /// How often it heartbeats.
    pub heartbeat: Duration,
    /// Silence after which a node is declared down.
    pub node_timeout: Duration,
    /// Silence after which a node's replicas are moved to other nodes.
    pub replace_after: Duration,
    /// The manager group's Raft timings.
    pub raft: RaftTimings,
    /// The Raft timings of replicated stateful tasks' groups.
    pub group_raft: RaftTimings,
    /// The largest frame accepted.
    pub max_frame_bytes: usize,
    /// Where to dial peers instead of their addresses.
    pub routes: std::collections::BTreeMap<String, String>,
    /// Where replicas write their final state when a run ends (off: `None`).
    pub state_export_dir: Option<PathBuf>,
}

fn invalid(field: &'static str, value: impl ToString, expected: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        value: value.to_string(),
        expected: expected.into(),
    }
}

fn check_addr(field: &'static str, addr: &str) -> Result<(), ConfigError> {
    match addr.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(invalid(
            field,
            addr,
            "an address that resolves, as host:port",
        )),
        Err(e) => Err(invalid(field, addr, format!("host:port ({e})"))),
    }
}

impl NodeConfig {
    /// Validates settings into a configuration, loading the secret.
    pub fn from_settings(s: NodeSettings) -> Result<Self, ConfigError> {
        let id = s.id.ok_or(ConfigError::Missing("id"))?;
        if id == 0 || id > u64::from(u32::MAX) {
            return Err(invalid("id", id, "between 1 and 4294967295"));
        }
        let listen = s.listen.ok_or(ConfigError::Missing("listen"))?;
        check_addr("listen", &listen)?;
        let advertise = s.advertise.unwrap_or_else(|| listen.clone());
        check_addr("advertise", &advertise)?;
        let peers = s.peers.ok_or(ConfigError::Missing("peers"))?;
        let peers: Vec<String> = peers
            .into_iter()
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect();
        if peers.is_empty() {
            return Err(invalid("peers", "(empty)", "at least one address"));
        }
        for p in &peers {
            check_addr("peers", p)?;
        }
        // By default the first 3 peers, or 1 when there are fewer than 3 (a manager group of
        // 2 would stop on the loss of either).
        let managers = s.managers.unwrap_or(if peers.len() >= 3 { 3 } else { 1 });
        if managers == 0 || managers % 2 == 0 || managers > peers.len() {
            return Err(invalid(
                "managers",
                managers,
                "an odd number (1, 3, 5), at most the number of peers",
            ));
        }
        let data_dir = s.data_dir.ok_or(ConfigError::Missing("data-dir"))?;
        let secret = match (s.secret_file, s.insecure.unwrap_or(false)) {
            (Some(_), true) => return Err(ConfigError::SecretAndInsecure),
            (Some(f), false) => Some(ClusterSecret::from_file(&f)?),
            (None, true) => None,
            (None, false) => return Err(ConfigError::NoSecret),
        };
        let heartbeat_ms = s.heartbeat_ms.unwrap_or(100);
        let node_timeout_ms = s.node_timeout_ms.unwrap_or(1000);
        if heartbeat_ms == 0 {
            return Err(invalid("heartbeat-ms", heartbeat_ms, "at least 1"));
        }
        if node_timeout_ms < 3 * heartbeat_ms {
            return Err(invalid(
                "node-timeout-ms",
                node_timeout_ms,
                format!("at least 3 heartbeats ({} ms)", 3 * heartbeat_ms),
            ));
        }
        let replace_after_ms = s.replace_after_ms.unwrap_or(10_000);
        if replace_after_ms < node_timeout_ms {
            return Err(invalid(
                "replace-after-ms",
                replace_after_ms,
                format!("at least the node timeout ({node_timeout_ms} ms)"),
            ));
        }
        let raft = RaftTimings {
            heartbeat_ms: s.raft_heartbeat_ms.unwrap_or(50),
            election_min_ms: s.raft_election_min_ms.unwrap_or(150),
            election_max_ms: s.raft_election_max_ms.unwrap_or(300),
        };
        let default_group = RaftTimings::replicated_bolts();
        let group_raft = RaftTimings {
            heartbeat_ms: s.group_heartbeat_ms.unwrap_or(default_group.heartbeat_ms),
            election_min_ms: s
                .group_election_min_ms
                .unwrap_or(default_group.election_min_ms),
            election_max_ms: s
                .group_election_max_ms
                .unwrap_or(default_group.election_max_ms),
        };
        for (field, t) in [("raft timings", raft), ("group raft timings", group_raft)] {
            if t.heartbeat_ms == 0
                || t.election_min_ms <= t.heartbeat_ms
                || t.election_max_ms <= t.election_min_ms
            {
                return Err(invalid(
                    field,
                    format!("{t:?}"),
                    "0 < heartbeat < election min < election max",
                ));
            }
        }
        let max_frame_bytes = s.max_frame_bytes.unwrap_or(DEFAULT_MAX_FRAME_BYTES);
        if !(HANDSHAKE_MAX_FRAME_BYTES..=1 << 30).contains(&max_frame_bytes) {
            return Err(invalid(
                "max-frame-bytes",
                max_frame_bytes,
                "between 1 KiB and 1 GiB",
            ));
        }
        let routes = s.routes.unwrap_or_default();
        for (peer, via) in &routes {
            check_addr("routes", peer)?;
            check_addr("routes", via)?;
        }
        Ok(NodeConfig {
            id: NodeId(id),
            listen,
            advertise,
            peers,
            managers,
            data_dir,
            secret,
            heartbeat: Duration::from_millis(heartbeat_ms),
            node_timeout: Duration::from_millis(node_timeout_ms),
            replace_after: Duration::from_millis(replace_after_ms),
            raft,
            group_raft,
            max_frame_bytes,
            routes,
            state_export_dir: s.state_export_dir,
        })
    }

    /// Whether this node runs a manager replica.
    pub fn is_manager(&self) -> bool {
        self.manager_addrs().contains(&self.advertise)
    }

    /// The addresses of the manager's nodes.
    pub fn manager_addrs(&self) -> &[String] {
        &self.peers[..self.managers]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path) -> NodeSettings {
        NodeSettings {
            id: Some(1),
            listen: Some("127.0.0.1:7001".into()),
            peers: Some(vec!["127.0.0.1:7001".into(), "127.0.0.1:7002".into()]),
            data_dir: Some(dir.to_owned()),
            insecure: Some(true),
            ..NodeSettings::default()
        }
    }

    #[test]
    fn flags_win_over_the_file_and_defaults_fill_the_rest() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("node.toml");
        std::fs::write(
            &file,
            "id = 4\nlisten = \"127.0.0.1:7004\"\npeers = [\"127.0.0.1:7004\"]\nheartbeat_ms = 50\ngroup_election_max_ms = 400\n",
        )
        .expect("write");
        let from_file = NodeSettings::from_file(&file).expect("parses");
        let flags = NodeSettings {
            id: Some(5),
            data_dir: Some(dir.path().to_owned()),
            insecure: Some(true),
            ..NodeSettings::default()
        };
        let c = NodeConfig::from_settings(from_file.overridden_by(flags)).expect("valid");
        assert_eq!(c.id, NodeId(5));
        assert_eq!(c.heartbeat, Duration::from_millis(50));
        assert_eq!(
            (c.group_raft.heartbeat_ms, c.group_raft.election_max_ms),
            (30, 400),
            "the groups' timings: the file's, and the defaults"
        );
        assert_eq!(c.managers, 1, "no more managers than peers");
        assert!(c.is_manager());
    }

    #[test]
    fn bad_settings_say_what_is_wrong() {
        let dir = tempfile::tempdir().expect("dir");
        let cases: Vec<(NodeSettings, &str)> = vec![
            (
                NodeSettings {
                    id: None,
                    ..settings(dir.path())
                },
                "missing `id`",
            ),
            (
                NodeSettings {
                    id: Some(0),
                    ..settings(dir.path())
                },
                "invalid `id`",
            ),
            (
                NodeSettings {
                    id: Some(1 << 32),
                    ..settings(dir.path())
                },
                "invalid `id`",
            ),
            (
                NodeSettings {
                    listen: Some("nowhere".into()),
                    ..settings(dir.path())
                },
                "invalid `listen`",
            ),
            (
                NodeSettings {
                    managers: Some(2),
                    ..settings(dir.path())
                },
                "odd number",
            ),
            (
                NodeSettings {
                    insecure: None,
                    ..settings(dir.path())
                },
                "no cluster secret",
            ),
            (
                NodeSettings {
                    node_timeout_ms: Some(10),
                    ..settings(dir.path())
                },
                "at least 3 heartbeats",
            ),
            (
                NodeSettings {
                    replace_after_ms: Some(500),
                    ..settings(dir.path())
                },
                "at least the node timeout",
            ),
            (
                NodeSettings {
                    raft_election_min_ms: Some(10),
                    ..settings(dir.path())
                },
                "election min",
            ),
            (
                NodeSettings {
                    group_election_max_ms: Some(50),
                    ..settings(dir.path())
                },
                "group raft timings",
            ),
            (
                NodeSettings {
                    max_frame_bytes: Some(10),
                    ..settings(dir.path())
                },
                "max-frame-bytes",
            ),
            (
                NodeSettings {
                    secret_file: Some(dir.path().join("none")),
                    ..settings(dir.path())
                },
                "contradict",
            ),
        ];
        for (s, expected) in cases {
            let err = NodeConfig::from_settings(s).expect_err(expected);
            assert!(
                err.to_string().contains(expected),
                "{err} should mention {expected}"
            );
        }
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "id = 1\nlisten = 5\nbogus = true\n").expect("write");
        let err = NodeSettings::from_file(&file).expect_err("bad toml");
        assert!(err.to_string().contains("not valid"), "{err}");
    }
}
