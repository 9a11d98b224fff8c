//! [`Registry`]: the topologies a binary can run, by name. Rust cannot ship code to a running
//! cluster, so every node runs the same binary, and `tempest submit NAME` names one of its
//! registered topologies; each node builds it from the same name and arguments.

use std::collections::BTreeMap;

use tempest_dsl::Topology;

/// The arguments of a submission (`--arg key=value`), by key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopologyArgs(pub BTreeMap<String, String>);

impl TopologyArgs {
    /// The value of `key`, if given.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The value of `key` parsed as `T`, `default` when absent; an error names the key.
    pub fn parse_or<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|e| format!("argument `{key}` = {v:?}: {e}")),
        }
    }
}

type Factory = Box<dyn Fn(&TopologyArgs) -> Result<Topology, String> + Send + Sync>;

/// The topologies of a binary, by name.
#[derive(Default)]
pub struct Registry {
    topologies: BTreeMap<String, (String, Factory)>,
}

/// Why a registered topology could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No topology of that name.
    #[error("no topology `{name}` is registered in this binary (registered: {known})")]
    Unknown {
        /// The name asked for.
        name: String,
        /// The names there are.
        known: String,
    },
    /// The topology's factory refused the arguments or the topology did not build.
    #[error("topology `{name}` does not build: {why}")]
    Build {
        /// The topology.
        name: String,
        /// Why.
        why: String,
    },
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Registers `factory` as `name`, described by `about` (for `tempest submit --help`).
    pub fn register(
        mut self,
        name: &str,
        about: &str,
        factory: impl Fn(&TopologyArgs) -> Result<Topology, String> + Send + Sync + 'static,
    ) -> Self {
        self.topologies
            .insert(name.to_owned(), (about.to_owned(), Box::new(factory)));
        self
    }

    /// Builds topology `name` with `args`.
    pub fn build(&self, name: &str, args: &TopologyArgs) -> Result<Topology, RegistryError> {
        let (_, factory) = self
            .topologies
            .get(name)
            .ok_or_else(|| RegistryError::Unknown {
                name: name.to_owned(),
                known: self
                    .topologies
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        factory(args).map_err(|why| RegistryError::Build {
            name: name.to_owned(),
            why,
        })
    }

    /// The registered names and descriptions.
    pub fn list(&self) -> impl Iterator<Item = (&str, &str)> {
        self.topologies
            .iter()
            .map(|(n, (about, _))| (n.as_str(), about.as_str()))
    }
}
