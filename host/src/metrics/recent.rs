//! The recent samples of the series alert rules read, held in memory so an
//! evaluator tick does not read its windows from the store (Prometheus's
//! rules read its in-memory head block the same way).
//!
//! A series is held once an evaluation asks for it ([`RecentSamples::watch`]
//! then [`RecentSamples::fill`] from the store); from then on the writer
//! appends every committed sample of it ([`RecentSamples::record`]), and
//! samples older than the longest window asked for are dropped. A series
//! no evaluation read for [`UNREAD_MS`] is let go. Held samples carry their
//! log sequence numbers, so a sample both appended and read from the store
//! during a fill is kept once, and of two samples at one instant the later
//! report wins, exactly as a store read orders them.
//!
//! Only a single-process store can be served this way (with several
//! replicas on PostgreSQL another replica's commits never pass through this
//! writer), so the server enables it for SQLite alone.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use super::index::IdHasher;
use crate::store::{SampleRow, SeriesRef};

/// A series no evaluation read for this long is no longer held.
pub const UNREAD_MS: i64 = 10 * 60_000;
/// Longest window held (older reads go to the store).
pub const MAX_KEEP_MS: i64 = 2 * 3_600_000;
/// Most samples held in all; past it, further series are read from the store.
pub const MAX_HELD: usize = 20_000_000;
/// A held sample: timestamp (ms), log sequence number, value.
pub type Held = (i64, i64, f64);

#[derive(Default)]
pub struct RecentSamples {
    enabled: AtomicBool,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    series: HashMap<i64, Series, BuildHasherDefault<IdHasher>>,
    /// How far back from its newest sample a series keeps samples.
    keep_ms: i64,
    held: usize,
    swept_ms: i64,
}

struct Series {
    /// Every sample with a timestamp at or after this is held (once `ready`).
    from_ms: i64,
    /// Filled from the store; until then only appended samples are here.
    ready: bool,
    /// In (timestamp, sequence) order.
    samples: VecDeque<Held>,
    read_ms: i64,
}

impl Series {
    fn insert(&mut self, s: Held) {
        match self.samples.back() {
            Some(last) if (last.0, last.1) > (s.0, s.1) => {
                let at = self.samples.partition_point(|h| (h.0, h.1) < (s.0, s.1));
                if self.samples.get(at).is_none_or(|h| h.1 != s.1) {
                    self.samples.insert(at, s);
                }
            }
            Some(last) if last.1 == s.1 => {}
            _ => self.samples.push_back(s),
        }
    }

    /// Drops samples older than `keep_ms` before the newest; answers how many.
    fn trim(&mut self, keep_ms: i64) -> usize {
        let Some(newest) = self.samples.back().map(|s| s.0) else {
            return 0;
        };
        let cut = newest.saturating_sub(keep_ms);
        if cut <= self.from_ms {
            return 0;
        }
        let n = self.samples.partition_point(|s| s.0 < cut);
        self.samples.drain(..n);
        self.from_ms = cut;
        n
    }
}

impl RecentSamples {
    /// Turns holding on (the server does so for SQLite).
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Appends the samples of one commit: `rows` in insertion order,
    /// `new_ids` the ids of its new series, `last_seq` the sequence number
    /// of its last sample (a commit's samples have consecutive numbers).
    pub fn record(&self, rows: &[SampleRow], new_ids: &[i64], last_seq: i64) {
        if !self.enabled() || rows.is_empty() {
            return;
        }
        let mut inner = self.inner.lock();
        if inner.series.is_empty() {
            return;
        }
        let first_seq = last_seq - rows.len() as i64 + 1;
        let keep_ms = inner.keep_ms;
        let mut added = 0usize;
        let mut dropped = 0usize;
        for (i, row) in rows.iter().enumerate() {
            let id = match row.series {
                SeriesRef::Known(id) => id,
                // A new series is held by no evaluation yet.
                SeriesRef::New(n) => match new_ids.get(n) {
                    Some(id) => *id,
                    None => continue,
                },
            };
            let Some(s) = inner.series.get_mut(&id) else {
                continue;
            };
            if row.ts_ms < s.from_ms {
                continue;
            }
            let before = s.samples.len();
            s.insert((row.ts_ms, first_seq + i as i64, row.value));
            added += s.samples.len() - before;
            if s.samples.len() % 64 == 0 {
                dropped += s.trim(keep_ms);
            }
        }
        inner.held = inner.held + added - dropped;
    }

    /// The samples with timestamps in `[start_ms, end_ms)` of each of
    /// `ids` that is held from `start_ms` on, and the ids that are not.
    pub fn read(
        &self,
        ids: &[i64],
        start_ms: i64,
        end_ms: i64,
        now_ms: i64,
    ) -> (Vec<(i64, Vec<Held>)>, Vec<i64>) {
        let mut found = Vec::with_capacity(ids.len());
        let mut missing = Vec::new();
        if !self.enabled() {
            return (found, ids.to_vec());
        }
        let mut inner = self.inner.lock();
        if now_ms - inner.swept_ms >= 60_000 {
            inner.swept_ms = now_ms;
            let mut freed = 0;
            inner.series.retain(|_, s| {
                let keep = now_ms - s.read_ms < UNREAD_MS;
                if !keep {
                    freed += s.samples.len();
                }
                keep
            });
            inner.held -= freed;
        }
        for id in ids {
            match inner.series.get_mut(id) {
                Some(s) if s.ready && s.from_ms <= start_ms => {
                    s.read_ms = now_ms;
                    let from = s.samples.partition_point(|h| h.0 < start_ms);
                    let to = s.samples.partition_point(|h| h.0 < end_ms);
                    if to > from {
                        found.push((*id, s.samples.range(from..to).copied().collect()));
                    }
                }
                _ => missing.push(*id),
            }
        }
        (found, missing)
    }

    /// Which of `ids` are not held from `start_ms` on.
    pub fn unheld(&self, ids: &[i64], start_ms: i64) -> Vec<i64> {
        if !self.enabled() {
            return Vec::new();
        }
        let inner = self.inner.lock();
        ids.iter()
            .copied()
            .filter(|id| {
                inner
                    .series
                    .get(id)
                    .is_none_or(|s| !s.ready || s.from_ms > start_ms)
            })
            .collect()
    }

    /// Starts holding `ids` from `from_ms` (within [`MAX_KEEP_MS`] of
    /// `now_ms` and while fewer than [`MAX_HELD`] samples are held): from
    /// now on their commits are appended. Answers whether it took them;
    /// the caller then reads them from the store from `from_ms` on and
    /// passes each to `fill`.
    pub fn watch(&self, ids: &[i64], from_ms: i64, now_ms: i64) -> bool {
        if !self.enabled() || ids.is_empty() || now_ms - from_ms > MAX_KEEP_MS {
            return false;
        }
        let mut inner = self.inner.lock();
        if inner.held >= MAX_HELD {
            return false;
        }
        inner.keep_ms = inner.keep_ms.max(now_ms - from_ms);
        for id in ids {
            let s = inner.series.entry(*id).or_insert_with(|| Series {
                from_ms,
                ready: false,
                samples: VecDeque::new(),
                read_ms: now_ms,
            });
            s.ready = false;
            s.from_ms = s.from_ms.min(from_ms);
            s.read_ms = now_ms;
        }
        true
    }

    /// Completes the holding of a watched series with what the store holds
    /// from its `from_ms` on (any order).
    pub fn fill(&self, id: i64, stored: &[Held]) {
        let mut inner = self.inner.lock();
        let keep_ms = inner.keep_ms;
        let Some(s) = inner.series.get_mut(&id) else {
            return;
        };
        let before = s.samples.len();
        let from_ms = s.from_ms;
        for h in stored {
            if h.0 >= from_ms {
                s.insert(*h);
            }
        }
        s.ready = true;
        s.trim(keep_ms);
        let after = s.samples.len();
        inner.held = inner.held - before + after;
    }

    /// How many samples are held in all.
    pub fn held(&self) -> usize {
        self.inner.lock().held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(series: &[(i64, i64, f64)]) -> Vec<SampleRow> {
        series
            .iter()
            .map(|(id, ts, v)| SampleRow {
                series: SeriesRef::Known(*id),
                ts_ms: *ts,
                value: *v,
            })
            .collect()
    }

    fn enabled() -> RecentSamples {
        let r = RecentSamples::default();
        r.enable();
        r
    }

    #[test]
    fn nothing_is_held_until_an_evaluation_watches_a_series() {
        let r = enabled();
        r.record(&rows(&[(1, 1_000, 1.0)]), &[], 10);
        assert_eq!(r.held(), 0);
        let (found, missing) = r.read(&[1], 0, 2_000, 2_000);
        assert!(found.is_empty());
        assert_eq!(missing, vec![1]);
    }

    #[test]
    fn a_watched_series_merges_the_store_and_the_commits_once_each() {
        let r = enabled();
        assert!(r.watch(&[1, 2], 1_000, 5_000));
        // A commit lands while the store is read: seqs 11, 12.
        r.record(&rows(&[(1, 3_000, 3.0), (1, 4_000, 4.0)]), &[], 12);
        // The store read saw seq 11 already, and an earlier sample.
        r.fill(1, &[(2_000, 5, 2.0), (3_000, 11, 3.0), (500, 1, 0.5)]);
        r.fill(2, &[]);
        let (found, missing) = r.read(&[1, 2, 3], 1_000, 5_000, 5_000);
        assert_eq!(missing, vec![3]);
        assert_eq!(
            found,
            vec![(1, vec![(2_000, 5, 2.0), (3_000, 11, 3.0), (4_000, 12, 4.0)])]
        );
        assert_eq!(r.held(), 3);
        // A window starting before what is held is not served.
        let (_, missing) = r.read(&[1], 999, 5_000, 5_000);
        assert_eq!(missing, vec![1]);
    }

    #[test]
    fn late_samples_go_in_time_order_and_a_window_ends_before_its_end() {
        let r = enabled();
        r.watch(&[1], 0, 10_000);
        r.fill(1, &[]);
        r.record(&rows(&[(1, 5_000, 5.0)]), &[], 1);
        r.record(&rows(&[(1, 3_000, 3.0), (1, 5_000, 6.0)]), &[], 3);
        let (found, _) = r.read(&[1], 0, 5_000, 10_000);
        assert_eq!(found, vec![(1, vec![(3_000, 2, 3.0)])]);
        let (found, _) = r.read(&[1], 0, 5_001, 10_000);
        assert_eq!(
            found,
            vec![(1, vec![(3_000, 2, 3.0), (5_000, 1, 5.0), (5_000, 3, 6.0)])]
        );
    }

    #[test]
    fn samples_older_than_the_longest_window_are_dropped() {
        let r = enabled();
        // The evaluation asked for 10 s back.
        r.watch(&[7], 90_000, 100_000);
        r.fill(7, &[]);
        let many: Vec<(i64, i64, f64)> = (0..640).map(|i| (7, 100_000 + i * 100, 1.0)).collect();
        r.record(&rows(&many), &[], 640);
        // Newest at 163.9 s: what is older than 153.9 s is gone.
        assert!(r.held() <= 101 + 64, "held {}", r.held());
        let (_, missing) = r.read(&[7], 100_000, 170_000, 170_000);
        assert_eq!(missing, vec![7], "a trimmed start is no longer served");
        let (found, _) = r.read(&[7], 160_000, 170_000, 170_000);
        assert_eq!(found[0].1.len(), 40);
    }

    #[test]
    fn disabled_holds_nothing_and_unread_series_are_let_go() {
        let off = RecentSamples::default();
        assert!(!off.watch(&[1], 0, 1_000));
        let r = enabled();
        r.watch(&[1], 0, 1_000);
        r.fill(1, &[(500, 1, 1.0)]);
        assert_eq!(r.held(), 1);
        let later = 1_000 + UNREAD_MS + 60_000;
        let (_, missing) = r.read(&[2], 0, later, later);
        assert_eq!(missing, vec![2]);
        assert_eq!(r.held(), 0);
    }
}
