//! Anchors of the event chain: signed checkpoints of its head, kept outside the database.
//!
//! The hash chain ([`crate::records::events`]) shows an edited or deleted row, but not a cut tail whose
//! head row was rewritten to match: whoever can write the database can do that. So the daemon
//! signs the head it sees — `{seq, hash, at_ms, mac}`, the MAC an HMAC-SHA256 under a key
//! derived from the key file's ([`crate::store::secrets::SealingKey::derive`], label
//! [`crate::records::anchor::KEY_LABEL`]) — and appends it to a file beside the key file, once per
//! interval in which the head moved; it copies one checkpoint a minute to its log (target
//! `rolegate::anchor`), for syslog or journald to keep.
//! `events verify` then checks that every event a valid checkpoint names carries the anchored
//! hash and that the chain reaches the newest one. A database writer without the key file
//! cannot sign a checkpoint for a chain it rewrote.
//!
//! The file is not secret (hashes and MACs) but must not be writable by others: it is created
//! with mode 0600, and one writable by its group or others is refused. Every line is written
//! with one `write` in append mode and fsync'd before the next tick.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::model::error::{Error, Result};
use crate::store::secrets::{SealingKey, hmac_sha256, hmac_sha256_matches};
use crate::store::{Store, Tx, Value};

/// The label of the anchor key derived from the key file's key; also the first bytes of
/// every signed message (a new encoding gets a new label).
pub const KEY_LABEL: &str = "rolegate anchor v1";

/// How often at most a checkpoint is copied to the log.
pub const MIRROR_EVERY: Duration = Duration::from_secs(60);

/// A signed checkpoint: the chain's head as the daemon saw it, one JSON line of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The newest event's sequence number.
    pub seq: i64,
    /// Its hash (hex).
    pub hash: String,
    /// When it was signed, in Unix milliseconds.
    pub at_ms: i64,
    /// HMAC-SHA256 (hex) over the fields, under the anchor key.
    pub mac: String,
}

impl Checkpoint {
    /// When it was signed, as an RFC 3339 time.
    pub fn at(&self) -> String {
        time(self.at_ms)
    }
}

/// A Unix millisecond time as RFC 3339 (its number when out of range).
pub fn time(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(|_| format!("{ms} ms"), |t| t.to_string())
}

/// The MAC's message: the label, a zero byte, seq and time as 8 big-endian bytes each, the
/// hash's length as 8 big-endian bytes, then the hash. Fixed widths and a length prefix: no
/// two checkpoints share an encoding.
fn signed_parts<'a>(
    bufs: &'a mut [[u8; 8]; 3],
    seq: i64,
    hash: &'a str,
    at_ms: i64,
) -> [&'a [u8]; 6] {
    let len = u64::try_from(hash.len()).unwrap_or(u64::MAX);
    *bufs = [seq.to_be_bytes(), at_ms.to_be_bytes(), len.to_be_bytes()];
    let [s, a, l] = bufs;
    [KEY_LABEL.as_bytes(), b"\0", s, a, l, hash.as_bytes()]
}

/// The key that signs checkpoints, derived from the key file's key; never shown.
pub struct AnchorKey([u8; 32]);

impl std::fmt::Debug for AnchorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AnchorKey(<secret>)")
    }
}

impl AnchorKey {
    /// The anchor key of a key file.
    pub fn derive(key: &SealingKey) -> Result<Self> {
        key.derive(KEY_LABEL).map(Self)
    }

    /// Signs the head (`seq`, `hash`) seen at `at_ms`.
    pub fn sign(&self, seq: i64, hash: &str, at_ms: i64) -> Result<Checkpoint> {
        let mut bufs = [[0u8; 8]; 3];
        let mac = hmac_sha256(&self.0, &signed_parts(&mut bufs, seq, hash, at_ms))?;
        Ok(Checkpoint {
            seq,
            hash: hash.to_string(),
            at_ms,
            mac: hex::encode(mac),
        })
    }

    /// Whether `c` carries a MAC this key made.
    pub fn check(&self, c: &Checkpoint) -> bool {
        let mut bufs = [[0u8; 8]; 3];
        hex::decode(&c.mac).is_ok_and(|mac| {
            hmac_sha256_matches(
                &self.0,
                &signed_parts(&mut bufs, c.seq, &c.hash, c.at_ms),
                &mac,
            )
        })
    }
}

/// A checkpoint of the file whose MAC does not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Its line in the file, from 1.
    pub line: usize,
    /// The sequence number it claims.
    pub seq: i64,
    /// The time it claims (Unix ms).
    pub at_ms: i64,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {} of the anchor file (event {}, {}) does not carry a valid MAC: it was forged or altered, or signed with another key file",
            self.line,
            self.seq,
            time(self.at_ms)
        )
    }
}

/// What an anchor file holds: its valid checkpoints, the ones whose MAC fails, and the lines
/// that are no checkpoint at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Anchors {
    valid: Vec<Checkpoint>,
    refused: Vec<Refused>,
    unreadable: Vec<usize>,
}

impl Anchors {
    /// Reads the file's text, checking every checkpoint's MAC with `key`.
    pub fn parse(text: &str, key: &AnchorKey) -> Self {
        let mut out = Self::default();
        for (i, line) in text.lines().enumerate() {
            // A crash (power loss) in the middle of an append can leave part of a line, or
            // zeros: such a line is set aside, not taken for a forgery — a line that is no
            // checkpoint can vouch for nothing, and cannot hide anything either.
            if line.trim_matches(['\0', ' ', '\r']).is_empty() {
                continue;
            }
            match serde_json::from_str::<Checkpoint>(line) {
                Ok(c) if key.check(&c) => out.valid.push(c),
                Ok(c) => out.refused.push(Refused {
                    line: i + 1,
                    seq: c.seq,
                    at_ms: c.at_ms,
                }),
                Err(_) => out.unreadable.push(i + 1),
            }
        }
        out
    }

    /// The checkpoints whose MAC verifies, in the file's order.
    pub fn valid(&self) -> &[Checkpoint] {
        &self.valid
    }

    /// The checkpoints whose MAC fails.
    pub fn refused(&self) -> &[Refused] {
        &self.refused
    }

    /// The lines (from 1) that are no checkpoint (a torn write, or not rolegate's).
    pub fn unreadable(&self) -> &[usize] {
        &self.unreadable
    }

    /// The valid checkpoint of the highest sequence number (of equals, the last written).
    pub fn newest(&self) -> Option<&Checkpoint> {
        self.valid
            .iter()
            .enumerate()
            .max_by_key(|(i, c)| (c.seq, *i))
            .map(|(_, c)| c)
    }
}

/// The anchor file and the key that signs and checks its checkpoints.
#[derive(Debug)]
pub struct AnchorFile {
    path: PathBuf,
    key: AnchorKey,
}

fn io(what: &str, path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        what: format!("{what} the anchor file {}", path.display()),
        source,
    }
}

impl AnchorFile {
    /// The file at `path`, signed and checked with `key`.
    pub fn new(path: PathBuf, key: AnchorKey) -> Self {
        Self { path, key }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Signs the head (`seq`, `hash`) seen at `at_ms`.
    pub fn sign(&self, seq: i64, hash: &str, at_ms: i64) -> Result<Checkpoint> {
        self.key.sign(seq, hash, at_ms)
    }

    /// Creates the file (mode 0600) when it does not exist, and checks that it is a regular
    /// file its group and others cannot write: called at start, so a file that cannot be
    /// written stops the daemon with its name rather than failing every interval.
    pub fn prepare(&self) -> Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        let existed = self.path.exists();
        drop(self.open_append()?);
        if !existed {
            // The new name must survive a power loss as well as the lines written to it.
            let dir = match self.path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io("syncing the folder of", &self.path, e))?;
        }
        let meta =
            std::fs::metadata(&self.path).map_err(|e| io("reading the mode of", &self.path, e))?;
        let mode = meta.permissions().mode() & 0o777;
        if !meta.is_file() || mode & 0o022 != 0 {
            return Err(Error::Invalid {
                what: format!("the anchor file {}", self.path.display()),
                message: format!(
                    "it must be a regular file only its owner can write (it is mode {mode:03o}); run `chmod 600 {}`",
                    self.path.display()
                ),
            });
        }
        Ok(())
    }

    fn open_append(&self) -> Result<std::fs::File> {
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(|e| io("opening", &self.path, e))
    }

    /// Appends `c` as one line and syncs it to disk (blocking).
    pub fn append(&self, c: &Checkpoint) -> Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::FileExt as _;
        let mut f = self.open_append()?;
        let len = f
            .metadata()
            .map_err(|e| io("reading the length of", &self.path, e))?
            .len();
        let mut line = String::new();
        // After a torn write the file ends inside a line: end that one first.
        let mut last = [0u8; 1];
        if len > 0 {
            f.read_exact_at(&mut last, len - 1)
                .map_err(|e| io("reading", &self.path, e))?;
            if last[0] != b'\n' {
                line.push('\n');
            }
        }
        let json = serde_json::to_string(c).map_err(|e| Error::Store {
            what: "writing a checkpoint".into(),
            message: e.to_string(),
        })?;
        line.push_str(&json);
        line.push('\n');
        f.write_all(line.as_bytes())
            .and_then(|()| f.sync_data())
            .map_err(|e| io("writing to", &self.path, e))
    }

    /// Reads and checks every checkpoint (blocking); no file is no checkpoint.
    pub fn read(&self) -> Result<Anchors> {
        match std::fs::read(&self.path) {
            Ok(bytes) => Ok(Anchors::parse(&String::from_utf8_lossy(&bytes), &self.key)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Anchors::default()),
            Err(e) => Err(io("reading", &self.path, e)),
        }
    }
}

/// The chain's head as stored: (seq, hash).
pub fn stored_head(tx: &mut dyn Tx) -> Result<(i64, String)> {
    let rows = tx.query("SELECT seq, hash FROM event_head WHERE one = 1", &[])?;
    let head = rows.first().ok_or_else(|| Error::Store {
        what: "reading the event chain's head".into(),
        message: "the event chain has no head row".into(),
    })?;
    Ok((head.int(0)?, head.text(1)?))
}

/// What is wrong with the chain's end, by the newest valid anchor, found without walking the
/// chain (a few indexed reads, for the daemon's start): the newest events deleted, or the
/// anchored event rewritten; and the checkpoints whose MAC fails. Each is one sentence.
pub fn check_end(tx: &mut dyn Tx, anchors: &Anchors) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    if let Some(c) = anchors.newest() {
        let rows = tx.query(
            "SELECT hash FROM events WHERE seq = $1",
            &[Value::Int(c.seq)],
        )?;
        match rows.first().map(|r| r.text(0)) {
            None => {
                let last = tx.query("SELECT max(seq) FROM events", &[])?;
                let last = match last.first().map(|r| r.0.first()) {
                    Some(Some(Value::Int(n))) => *n,
                    _ => 0,
                };
                problems.push(if last < c.seq {
                    format!(
                        "the chain ends at event {last} but event {} was anchored at {} (the newest events were deleted)",
                        c.seq,
                        c.at()
                    )
                } else {
                    format!(
                        "event {}, anchored at {}, is missing (deleted)",
                        c.seq,
                        c.at()
                    )
                });
            }
            Some(Ok(hash)) if hash == c.hash => {}
            Some(_) => problems.push(format!(
                "event {} is not the event anchored at {}: its hash differs (the chain was rewritten)",
                c.seq,
                c.at()
            )),
        }
    }
    if let Some(first) = anchors.refused().first() {
        problems.push(format!(
            "{first}{}",
            match anchors.refused().len() {
                1 => String::new(),
                n => format!(" ({} more such lines)", n - 1),
            }
        ));
    }
    Ok(problems)
}

/// Anchors the head the daemon sees, once per interval in which it moved, and copies a
/// checkpoint to the log at most once a minute.
#[derive(Debug)]
pub struct Anchorer {
    file: Arc<AnchorFile>,
    /// The head last anchored (or the file's newest at start).
    last: Option<(i64, String)>,
    /// A checkpoint not yet copied to the log.
    unmirrored: Option<Checkpoint>,
    /// When a checkpoint was last copied to the log.
    mirrored_at: Option<Instant>,
    /// A head lower than the last anchored one, once reported.
    went_back: Option<i64>,
}

impl Anchorer {
    /// Starts after `newest`, the file's newest valid checkpoint.
    pub fn new(file: Arc<AnchorFile>, newest: Option<&Checkpoint>) -> Self {
        Self {
            file,
            last: newest.map(|c| (c.seq, c.hash.clone())),
            unmirrored: None,
            mirrored_at: None,
            went_back: None,
        }
    }

    /// Reads the head; when it moved, signs and appends a checkpoint (returned). Copies the
    /// newest checkpoint to the log when the last copy is a minute old.
    pub async fn tick(&mut self, store: &Store, now_ms: i64) -> Result<Option<Checkpoint>> {
        let head = store.read(stored_head).await?;
        let mut written = None;
        if head.0 > 0 && self.last.as_ref() != Some(&head) {
            if let Some((last, _)) = &self.last
                && head.0 < *last
                && self.went_back != Some(head.0)
            {
                tracing::error!(
                    target: "rolegate::anchor",
                    anchored = *last,
                    head = head.0,
                    "the event chain's head went back from event {last} to event {}: the newest events were deleted; `rolegate events verify` reports it",
                    head.0
                );
                self.went_back = Some(head.0);
            }
            let c = self.file.sign(head.0, &head.1, now_ms)?;
            let file = Arc::clone(&self.file);
            let line = c.clone();
            tokio::task::spawn_blocking(move || file.append(&line))
                .await
                .map_err(|e| Error::Io {
                    what: "appending a checkpoint".into(),
                    source: std::io::Error::other(e.to_string()),
                })??;
            self.last = Some(head);
            self.unmirrored = Some(c.clone());
            written = Some(c);
        }
        if self.mirrored_at.is_none_or(|t| t.elapsed() >= MIRROR_EVERY) {
            self.mirror();
        }
        Ok(written)
    }

    /// Copies the newest checkpoint to the log, if it is not there yet (at shutdown, or a
    /// minute after the last copy).
    pub fn mirror(&mut self) {
        if let Some(c) = self.unmirrored.take() {
            tracing::info!(
                target: "rolegate::anchor",
                seq = c.seq,
                hash = %c.hash,
                at_ms = c.at_ms,
                mac = %c.mac,
                "event chain anchored"
            );
            self.mirrored_at = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(dir: &Path) -> AnchorKey {
        let k = SealingKey::load_or_create(&dir.join("rolegate.key")).unwrap();
        AnchorKey::derive(&k).unwrap()
    }

    #[test]
    fn a_checkpoint_verifies_only_as_signed_and_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let k = key(dir.path());
        let c = k.sign(7, &"ab".repeat(32), 1_764_150_000_000).unwrap();
        assert!(k.check(&c));
        assert_eq!(c.mac.len(), 64);
        for forged in [
            Checkpoint {
                seq: 8,
                ..c.clone()
            },
            Checkpoint {
                at_ms: c.at_ms + 1,
                ..c.clone()
            },
            Checkpoint {
                hash: "cd".repeat(32),
                ..c.clone()
            },
            Checkpoint {
                mac: "00".repeat(32),
                ..c.clone()
            },
            Checkpoint {
                mac: "not hex".into(),
                ..c.clone()
            },
        ] {
            assert!(!k.check(&forged), "{forged:?}");
        }
        let other = tempfile::tempdir().unwrap();
        assert!(!key(other.path()).check(&c));
        assert_eq!(format!("{k:?}"), "AnchorKey(<secret>)");
        // The encoding is fixed: the MAC of a known key and head never changes.
        let fixed = AnchorKey([7; 32]).sign(1, "h", 2).unwrap();
        let mut expected = Vec::new();
        expected.extend_from_slice(b"rolegate anchor v1\0");
        expected.extend_from_slice(&1i64.to_be_bytes());
        expected.extend_from_slice(&2i64.to_be_bytes());
        expected.extend_from_slice(&1u64.to_be_bytes());
        expected.extend_from_slice(b"h");
        assert_eq!(
            fixed.mac,
            hex::encode(hmac_sha256(&[7; 32], &[&expected]).unwrap())
        );
    }

    async fn append_event(store: &Store, i: i64) {
        store
            .write(move |tx| {
                crate::records::events::append(
                    tx,
                    crate::records::events::NewEvent::new(
                        crate::records::events::MFA_COMPLETED,
                        crate::records::events::Severity::Information,
                        "activation",
                        format!("event {i}"),
                    ),
                    1000 + i,
                )
            })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn the_anchorer_signs_the_head_when_it_moved_and_the_start_check_sees_a_cut() {
        let dir = tempfile::tempdir().unwrap();
        let open = || -> Store {
            crate::store::sqlite::Sqlite::open(&dir.path().join("rolegate.db"), 0)
                .unwrap()
                .into()
        };
        let store = open();
        let file = Arc::new(AnchorFile::new(
            dir.path().join("rolegate.anchors"),
            key(dir.path()),
        ));
        file.prepare().unwrap();
        let mut anchorer = Anchorer::new(Arc::clone(&file), None);
        // An empty chain is not anchored.
        assert_eq!(anchorer.tick(&store, 10).await.unwrap(), None);
        for i in 0..3 {
            append_event(&store, i).await;
        }
        let c = anchorer.tick(&store, 20).await.unwrap().unwrap();
        assert_eq!((c.seq, c.at_ms), (3, 20));
        assert_eq!(
            anchorer.tick(&store, 30).await.unwrap(),
            None,
            "no move, no line"
        );
        append_event(&store, 3).await;
        let c = anchorer.tick(&store, 40).await.unwrap().unwrap();
        assert_eq!(c.seq, 4);
        let anchors = file.read().unwrap();
        assert_eq!(anchors.valid().len(), 2);
        assert_eq!(anchors.newest(), Some(&c));
        // A restart goes on from the file's newest checkpoint.
        let mut again = Anchorer::new(Arc::clone(&file), anchors.newest());
        assert_eq!(again.tick(&store, 50).await.unwrap(), None);
        let check = |anchors: Anchors| async {
            store.read(move |tx| check_end(tx, &anchors)).await.unwrap()
        };
        assert_eq!(check(file.read().unwrap()).await, Vec::<String>::new());

        // The newest two deleted and the head rewritten while the daemon was down.
        store.close();
        let store = open();
        store
            .write(|tx| {
                tx.execute("DELETE FROM events WHERE seq > 2", &[])?;
                tx.execute(
                    "UPDATE event_head SET seq = 2, hash = (SELECT hash FROM events WHERE seq = 2)",
                    &[],
                )
            })
            .await
            .unwrap();
        store.close();
        let store = open();
        let check = |anchors: Anchors| async {
            store.read(move |tx| check_end(tx, &anchors)).await.unwrap()
        };
        assert_eq!(
            check(file.read().unwrap()).await,
            [
                "the chain ends at event 2 but event 4 was anchored at 1970-01-01T00:00:00.04Z (the newest events were deleted)"
            ]
        );
        // The head that went back is anchored too (the higher checkpoint stays the newest).
        let c = again.tick(&store, 60).await.unwrap().unwrap();
        assert_eq!(c.seq, 2);
        assert_eq!(file.read().unwrap().newest().map(|c| c.seq), Some(4));
        // Events written after the cut give event 4 another hash: a rewrite.
        append_event(&store, 9).await;
        append_event(&store, 10).await;
        assert_eq!(
            check(file.read().unwrap()).await,
            [
                "event 4 is not the event anchored at 1970-01-01T00:00:00.04Z: its hash differs (the chain was rewritten)"
            ]
        );
        store.close();
    }

    #[test]
    fn the_file_is_private_appended_and_read_back_with_its_refusals() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rolegate.anchors");
        let file = AnchorFile::new(path.clone(), key(dir.path()));
        assert_eq!(file.read().unwrap(), Anchors::default(), "no file yet");
        file.prepare().unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let a = file.sign(3, "h3", 1000).unwrap();
        let b = file.sign(5, "h5", 2000).unwrap();
        file.append(&a).unwrap();
        // A torn write: the next checkpoint starts on a line of its own.
        std::fs::write(
            &path,
            format!(
                "{}{{\"seq\": 4, \"ha",
                std::fs::read_to_string(&path).unwrap()
            ),
        )
        .unwrap();
        file.append(&b).unwrap();
        let forged = Checkpoint {
            seq: 9,
            ..b.clone()
        };
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            &path,
            format!("{text}{}\n\n", serde_json::to_string(&forged).unwrap()),
        )
        .unwrap();
        let read = file.read().unwrap();
        assert_eq!(read.valid(), [a, b.clone()]);
        assert_eq!(read.newest(), Some(&b));
        assert_eq!(read.unreadable(), [2]);
        assert_eq!(
            read.refused(),
            [Refused {
                line: 4,
                seq: 9,
                at_ms: 2000
            }]
        );
        let said = read.refused()[0].to_string();
        assert!(said.starts_with("line 4 of the anchor file (event 9, 1970-01-01T00:00:02Z) does not carry a valid MAC"), "{said}");
        // A file others could write is refused at start.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o622)).unwrap();
        let e = file.prepare().unwrap_err().to_string();
        assert!(
            e.contains("only its owner can write (it is mode 622)"),
            "{e}"
        );
    }
}
