//! Storage: one API over SQLite (the embedded default) and, later, PostgreSQL.
//!
//! Writes go through one writer per store that commits whatever is queued in a single
//! transaction (group commit): each write is durable (fsync'd) before its caller hears of it,
//! and a burst of writes shares one fsync. Every write runs inside its own savepoint, so one
//! failing write does not undo the others of its batch. Reads run on a pool of read-only
//! connections beside the writer (SQLite WAL).
//!
//! SQL is written once, in the subset both databases speak, with `$1`-style parameters and
//! the [`Value`] type; each backend implements [`Tx`].

pub mod schema;
pub mod sqlite;

use crate::error::{Error, Result};

/// A value bound to, or read from, a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A 64-bit integer.
    Int(i64),
    /// UTF-8 text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Int(i64::from(v))
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_string())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Blob(v)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// One result row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row(pub Vec<Value>);

fn column_error(i: usize, want: &str, got: &Value) -> Error {
    Error::Store {
        what: "reading a row".into(),
        message: format!("column {i} should be {want}, found {got:?}"),
    }
}

impl Row {
    fn at(&self, i: usize) -> Result<&Value> {
        self.0.get(i).ok_or_else(|| Error::Store {
            what: "reading a row".into(),
            message: format!("no column {i}"),
        })
    }

    /// Column `i` as an integer.
    pub fn int(&self, i: usize) -> Result<i64> {
        match self.at(i)? {
            Value::Int(v) => Ok(*v),
            other => Err(column_error(i, "an integer", other)),
        }
    }

    /// Column `i` as text.
    pub fn text(&self, i: usize) -> Result<String> {
        match self.at(i)? {
            Value::Text(v) => Ok(v.clone()),
            other => Err(column_error(i, "text", other)),
        }
    }

    /// Column `i` as optional text.
    pub fn opt_text(&self, i: usize) -> Result<Option<String>> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Text(v) => Ok(Some(v.clone())),
            other => Err(column_error(i, "text or null", other)),
        }
    }

    /// Column `i` as bytes.
    pub fn blob(&self, i: usize) -> Result<Vec<u8>> {
        match self.at(i)? {
            Value::Blob(v) => Ok(v.clone()),
            other => Err(column_error(i, "bytes", other)),
        }
    }
}

/// A transaction (or a read-only connection) of any backend.
pub trait Tx {
    /// Runs a statement; returns the number of rows it changed.
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64>;
    /// Runs a query; returns its rows.
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>>;
    /// Which backend this is (`sqlite`, `postgres`), for the rare statement that differs.
    fn backend(&self) -> &'static str;
}

/// A write to run in the writer's transaction.
pub type WriteOp<T> = Box<dyn FnOnce(&mut dyn Tx) -> Result<T> + Send>;
