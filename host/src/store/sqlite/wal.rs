//! The WAL behind the writer: the syncer that fsyncs it, and the checkpointer that copies
//! it back into the database off the writer's path.

use super::*;

/// When the WAL is started over, and how much of it the writer copies back itself.
#[derive(Debug, Clone, Copy)]
pub(super) struct WalLimits {
    /// The WAL size (in frames, one page each) from which on it is started over.
    pub(super) restart_frames: i64,
    /// The WAL size from which on the checkpointer copies it back. Late, so that a page
    /// written by every commit (an index's last leaf, the event head) is copied about once
    /// per WAL, not once per checkpoint: fewer writes and fsyncs beside the writer's.
    pub(super) copy_from: i64,
    /// The most frames the writer copies back itself to start the WAL over; the
    /// checkpointer copies the rest beforehand, off the writer's path.
    pub(super) tail_frames: i64,
    /// The WAL size from which on the writer checkpoints itself though the checkpointer has
    /// not called it (it stopped, or cannot keep up): the WAL must not grow without bound.
    pub(super) fallback_frames: i64,
}

impl WalLimits {
    /// The limits of a WAL started over at `mb` megabytes (4 KB pages). Each start-over holds
    /// every write up for one short checkpoint (its two fsyncs, 2–10 ms here), so they should
    /// be rare: at 64 MB, 17–21 per 8-second run of the activation bench at ~9,000/s, enough
    /// of them to set its p99; at 256 MB, 3–5, and the p99 was lower in 8 of 10 alternating
    /// pairs (median 10.1 against 11.5 ms). Readers do not pay for a long WAL: they only
    /// search the frames written since the last checkpoint, which the checkpointer starts at
    /// three quarters of it.
    pub(super) fn for_megabytes(mb: u32) -> Self {
        let restart_frames = i64::from(mb) * 256;
        Self {
            restart_frames,
            copy_from: restart_frames / 4 * 3,
            tail_frames: 256,
            fallback_frames: restart_frames * 2,
        }
    }
}

/// What the writer and the checkpointer tell each other about the WAL.
#[derive(Debug, Default)]
pub(super) struct WalWatch {
    /// The WAL's length in frames after the writer's last commit (its commit hook).
    pub(super) frames: AtomicI64,
    /// Set by the checkpointer when little is left to copy: the writer may start it over.
    pub(super) tail_ready: AtomicBool,
}

/// The shortest pause between two background checkpoints: short under load, so that each
/// copies little and the tail left for the writer stays small.
pub(super) const CHECKPOINT_PAUSE: Duration = Duration::from_millis(10);

/// The longest pause between two background checkpoints, when there was nothing to copy.
pub(super) const CHECKPOINT_IDLE_PAUSE: Duration = Duration::from_millis(250);

/// The most checkpoints in a row that shrink the tail left for the writer: the first copies
/// the bulk, each further one what the writer appended meanwhile.
pub(super) const CHECKPOINT_ROUNDS: usize = 6;

/// Makes committed batches durable: one fsync of the WAL covers every batch committed
/// before it began, so the writer goes on with the next batch meanwhile. A failed fsync
/// fails its callers and every later durable write (the kernel may have dropped the pages).
pub(super) fn sync_loop(wal: &Path, rx: mpsc::Receiver<Synced>) {
    let mut file: Option<std::fs::File> = None;
    let mut broken: Option<String> = None;
    while let Ok(first) = rx.recv() {
        let mut waiting = first;
        while let Ok(more) = rx.try_recv() {
            waiting.extend(more);
        }
        if broken.is_none() {
            if file.is_none() {
                match std::fs::File::open(wal) {
                    Ok(f) => {
                        // The WAL's directory entry must survive too (once).
                        if let Some(dir) = wal.parent()
                            && let Ok(d) = std::fs::File::open(dir)
                        {
                            let _ = d.sync_all();
                        }
                        file = Some(f);
                    }
                    Err(e) => broken = Some(format!("opening the WAL to sync it: {e}")),
                }
            }
            if let Some(f) = &file
                && let Err(e) = f.sync_data()
            {
                broken = Some(format!("fsync of the WAL failed: {e}"));
            }
        }
        for done in waiting {
            done(broken.as_deref());
        }
    }
}

/// A passive checkpoint (it never waits for the writer or readers; it copies what it can):
/// the frames in the WAL and how many of them are copied back, or `None` when another
/// checkpoint was running or it failed.
pub(super) fn checkpoint(conn: &Connection) -> Option<(i64, i64)> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })
    .ok()
    .filter(|(busy, log, _)| *busy == 0 && *log >= 0)
    .map(|(_, log, copied)| (log, copied))
}

/// Copies the WAL back into the database off the writer's path once it has grown long, and
/// when little of it is left to copy, tells the writer to start it over; copies what is left
/// when the writer is idle.
pub(super) fn checkpoint_loop(path: &Path, stop: &AtomicBool, watch: &WalWatch, limits: WalLimits) {
    let Ok(conn) = open_connection(path, false) else {
        return;
    };
    let mut pause = CHECKPOINT_PAUSE;
    let mut seen = -1;
    // Whether everything was copied since the writer went idle.
    let mut tidy = true;
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(pause);
        let frames = watch.frames.load(Ordering::Relaxed);
        if frames == seen {
            // No commit since the last look: copy what is left once (readers then find every
            // page in the database file), and look less and less often.
            if !tidy {
                tidy = checkpoint(&conn).is_some_and(|(log, copied)| log == copied);
            }
            pause = (pause * 2).min(CHECKPOINT_IDLE_PAUSE);
            continue;
        }
        seen = frames;
        tidy = false;
        pause = CHECKPOINT_PAUSE;
        if frames < limits.copy_from {
            continue;
        }
        let Some(mut state) = checkpoint(&conn) else {
            continue;
        };
        for _ in 0..CHECKPOINT_ROUNDS {
            if state.0 - state.1 <= limits.tail_frames {
                break;
            }
            match checkpoint(&conn) {
                Some(next) => state = next,
                None => break,
            }
        }
        let (log, copied) = state;
        if log >= limits.restart_frames && log - copied <= limits.tail_frames {
            watch.tail_ready.store(true, Ordering::Release);
        }
    }
}
