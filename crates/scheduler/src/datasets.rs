//! Published datasets (Dask's `publish_dataset`): named sets of keys the scheduler holds
//! for any client to take, until unpublished, whoever leaves. Each dataset holds its keys
//! in the core as a client of its own that never connects (as Dask's scheduler holds them
//! for a `published-NAME` client), so a dataset's values are kept, and recomputed when
//! lost, like any client's. Journaled: a restarted scheduler has them again.

use std::collections::BTreeMap;

use rask_proto::msg::{DatasetOp, ToClient};
use rask_proto::ClientId;

use crate::journal::Record;
use crate::server::Server;

/// The datasets by name: the client id holding their keys, and the keys in order.
pub(crate) type Datasets = BTreeMap<String, (ClientId, Vec<String>)>;

impl Server {
    /// A client's request about the datasets, answered.
    pub(crate) fn on_datasets(&mut self, c: ClientId, req: u64, op: DatasetOp) {
        let changes = matches!(op, DatasetOp::Publish { .. } | DatasetOp::Unpublish { .. });
        let (names, error) = match self.dataset_op(op) {
            Ok(names) => (names, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        if changes && error.is_none() {
            // The client is told a change is made: it must outlive a crash from then on,
            // so the journal (grouping its writes for a short while) goes to the OS first.
            self.journal_round(true);
        }
        self.to_client(c, ToClient::DatasetsReply { req, names, error });
    }

    fn dataset_op(&mut self, op: DatasetOp) -> Result<Vec<String>, String> {
        match op {
            DatasetOp::Publish {
                name,
                keys,
                replace,
            } => {
                if !replace && self.datasets.contains_key(&name) {
                    return Err(format!("a dataset named {name:?} is published already"));
                }
                if let Some(k) = keys.iter().find(|k| self.core.task_id(k).is_none()) {
                    return Err(format!(
                        "dataset {name:?}: the scheduler does not know the key {k:?}"
                    ));
                }
                let holder = ClientId(self.next_client);
                self.next_client += 1;
                self.core.on_client_joined(holder);
                if let Err(e) = self.core.on_update_graph(holder, Vec::new(), &keys) {
                    self.core.on_client_left(holder);
                    return Err(format!("dataset {name:?}: {e}"));
                }
                self.journal(&Record::Published {
                    name: name.clone(),
                    client: holder.0,
                    keys: keys.clone(),
                });
                if let Some((old, _)) = self.datasets.insert(name, (holder, keys)) {
                    self.core.on_client_left(old);
                }
                Ok(Vec::new())
            }
            DatasetOp::Unpublish { name } => match self.datasets.remove(&name) {
                Some((holder, _)) => {
                    self.core.on_client_left(holder);
                    self.journal(&Record::Unpublished(name));
                    Ok(Vec::new())
                }
                None => Err(format!("no dataset named {name:?}")),
            },
            DatasetOp::Get { name } => self
                .datasets
                .get(&name)
                .map(|(_, keys)| keys.clone())
                .ok_or_else(|| format!("no dataset named {name:?}")),
            DatasetOp::List => Ok(self.datasets.keys().cloned().collect()),
        }
    }

    /// Whether `c` is a dataset's holder, not a client.
    pub(crate) fn is_dataset_holder(&self, c: ClientId) -> bool {
        self.datasets.values().any(|(h, _)| *h == c)
    }
}
