//! Registry of durable queue names and their compact numeric ids.
//!
//! Owns: the `queues.json` file mapping `(vhost, name)` to a [`QueueId`] and
//! the never-reused id counter, written atomically before any record can
//! reference a new id. Does not own: queue contents (segment log) or queue
//! declarations/arguments (definitions).
//!
//! A record that names an id absent from this registry belongs to a deleted
//! queue and is ignored by recovery.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};
use crate::fsutil::write_atomic;
use crate::handle::QueueId;

/// File name of the registry.
pub const QUEUES_FILE: &str = "queues.json";
/// Version of the registry format.
pub const QUEUES_FORMAT: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Entry {
    vhost: String,
    name: String,
    id: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FileForm {
    format: u32,
    next_id: u32,
    queues: Vec<Entry>,
}

/// In-memory registry.
#[derive(Debug, Clone, Default)]
pub(crate) struct QueueRegistry {
    next_id: u32,
    by_name: HashMap<(String, String), u32>,
    by_id: HashMap<u32, (String, String)>,
}

impl QueueRegistry {
    pub(crate) fn load(dir: &Path) -> Result<QueueRegistry> {
        let path = dir.join(QUEUES_FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(QueueRegistry {
                    next_id: 1,
                    ..Default::default()
                })
            }
            Err(e) => return Err(StoreError::io(&path, e)),
        };
        let f: FileForm = serde_json::from_slice(&bytes).map_err(|source| StoreError::Json {
            path: path.clone(),
            source,
        })?;
        if f.format != QUEUES_FORMAT {
            return Err(StoreError::Corrupt {
                path,
                what: "queue registry",
                detail: format!("unsupported format {}", f.format),
            });
        }
        let mut r = QueueRegistry {
            next_id: f.next_id.max(1),
            ..Default::default()
        };
        for e in f.queues {
            if e.id >= r.next_id {
                return Err(StoreError::Corrupt {
                    path,
                    what: "queue registry",
                    detail: format!("queue id {} not below next_id {}", e.id, r.next_id),
                });
            }
            r.by_id.insert(e.id, (e.vhost.clone(), e.name.clone()));
            r.by_name.insert((e.vhost, e.name), e.id);
        }
        Ok(r)
    }

    pub(crate) fn save(&self, dir: &Path) -> Result<()> {
        let mut queues: Vec<Entry> = self
            .by_id
            .iter()
            .map(|(id, (v, n))| Entry {
                vhost: v.clone(),
                name: n.clone(),
                id: *id,
            })
            .collect();
        queues.sort_by_key(|e| e.id);
        let f = FileForm {
            format: QUEUES_FORMAT,
            next_id: self.next_id,
            queues,
        };
        let bytes = serde_json::to_vec(&f).map_err(|source| StoreError::Json {
            path: dir.join(QUEUES_FILE),
            source,
        })?;
        write_atomic(dir, QUEUES_FILE, &bytes)
    }

    pub(crate) fn get(&self, vhost: &str, name: &str) -> Option<QueueId> {
        self.by_name
            .get(&(vhost.to_string(), name.to_string()))
            .map(|&id| QueueId(id))
    }

    pub(crate) fn contains(&self, id: u32) -> bool {
        self.by_id.contains_key(&id)
    }

    pub(crate) fn name_of(&self, id: u32) -> Option<&(String, String)> {
        self.by_id.get(&id)
    }

    /// Allocate an id (not yet persisted: call [`Self::save`]).
    pub(crate) fn insert(&mut self, vhost: &str, name: &str) -> Result<QueueId> {
        let id = self.next_id;
        self.next_id = id
            .checked_add(1)
            .ok_or_else(|| StoreError::InvalidOptions("queue id space exhausted".to_string()))?;
        self.by_id.insert(id, (vhost.to_string(), name.to_string()));
        self.by_name
            .insert((vhost.to_string(), name.to_string()), id);
        Ok(QueueId(id))
    }

    pub(crate) fn remove(&mut self, id: u32) -> bool {
        match self.by_id.remove(&id) {
            Some(k) => {
                self.by_name.remove(&k);
                true
            }
            None => false,
        }
    }

    pub(crate) fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.by_id.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_persist_and_are_never_reused() -> Result<()> {
        let d = tempfile::tempdir().map_err(|e| StoreError::io("tempdir", e))?;
        let mut r = QueueRegistry::load(d.path())?;
        let a = r.insert("/", "a")?;
        let b = r.insert("/", "b")?;
        assert_ne!(a, b);
        assert!(r.remove(a.raw()));
        r.save(d.path())?;
        let mut r2 = QueueRegistry::load(d.path())?;
        assert_eq!(r2.get("/", "b"), Some(b));
        assert_eq!(r2.get("/", "a"), None);
        let c = r2.insert("/", "a")?;
        assert!(c.raw() > b.raw());
        Ok(())
    }
}
