//! Running a test on both store backends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use rolegate::store::Store;
use rolegate::store::postgres::{Postgres, parse_config};
use rolegate::store::sqlite::Sqlite;

/// Which database a test runs on.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    /// The embedded default.
    Sqlite,
    /// A database of its own on the test cluster.
    Postgres,
}

/// Where one test's state lives: its folder (key file, SQLite file) and, on PostgreSQL, a
/// database of its own.
pub struct Location {
    /// The test's folder.
    pub dir: tempfile::TempDir,
    /// The PostgreSQL connection string, on that backend.
    pub postgres: Option<String>,
}

impl Location {
    /// A fresh place on `backend`.
    pub fn new(backend: Backend) -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            postgres: match backend {
                Backend::Sqlite => None,
                Backend::Postgres => Some(crate::pg::fresh_database()),
            },
        }
    }

    /// The test's folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Opens (migrating) the store there.
    pub async fn open(&self) -> Store {
        match &self.postgres {
            None => Sqlite::open(&self.dir.path().join("rolegate.db"), 0)
                .unwrap()
                .into(),
            Some(conn) => {
                let config = parse_config(conn, None).unwrap();
                tokio::task::spawn_blocking(move || Postgres::open(config, 0))
                    .await
                    .unwrap()
                    .unwrap()
                    .into()
            }
        }
    }
}

/// Runs a test body once on SQLite and once on PostgreSQL.
#[macro_export]
macro_rules! both {
    ($(#[$test:meta])* async fn $name:ident($backend:ident) $body:block) => {
        mod $name {
            use super::*;
            use $crate::stores::Backend;

            async fn run($backend: Backend) $body

            $(#[$test])*
            async fn sqlite() {
                run(Backend::Sqlite).await
            }

            $(#[$test])*
            async fn postgres() {
                run(Backend::Postgres).await
            }
        }
    };
}
