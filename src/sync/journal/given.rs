//! [`Given`]: the lines of our journal that one peer gave us, so that what we send it never
//! echoes them back.

use super::store::JournalStore;
use alloc::collections::VecDeque;

/// Most runs remembered per peer (24 bytes each: at most 768 bytes a session). Lines are
/// appended in order, so what a peer gives us in bulk (a catch-up) forms long runs, which
/// is where skipping them saves the most; lines scattered among other peers' form short
/// runs that save little. Past the bound the oldest runs are forgotten, which costs at most
/// sending those lines back (the peer skips them as duplicates), never a loss.
pub(crate) const MAX_RUNS: usize = 32;

/// Runs of our lines (first, last, and our check at the last line) that came from the peer,
/// in order. A run is believed only while our journal still holds its last line with that
/// check: a journal replaced or rewound under us invalidates what it described.
#[derive(Debug, Clone, Default)]
pub(crate) struct Given {
    runs: VecDeque<(u64, u64, u64)>,
}

impl Given {
    /// Our line `seq` (check `check`) came from the peer.
    pub(crate) fn insert(&mut self, seq: u64, check: u64) {
        if let Some(last) = self.runs.back_mut() {
            if last.1.checked_add(1) == Some(seq) {
                last.1 = seq;
                last.2 = check;
                return;
            }
            if seq <= last.1 {
                // Out of order (our journal was replaced): start over from what is sure.
                self.runs.clear();
            }
        }
        if self.runs.len() == MAX_RUNS {
            self.runs.pop_front();
        }
        self.runs.push_back((seq, seq, check));
    }

    /// Forgets everything (the peer lost lines it gave us, or our journal changed).
    pub(crate) fn clear(&mut self) {
        self.runs.clear();
    }

    /// If our line `seq` came from the peer: the last line of its run, and that line's
    /// check, as long as `store` still holds the run.
    pub(crate) fn run_at<S: JournalStore + ?Sized>(&self, store: &S, seq: u64) -> Option<u64> {
        let i = self.runs.partition_point(|r| r.1 < seq);
        let &(first, last, check) = self.runs.get(i)?;
        if first > seq {
            return None;
        }
        match store.line(last) {
            Some(line) if line.check == check => Some(last),
            _ => None,
        }
    }

    /// Runs remembered (for tests and bounds).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.runs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::journal::MemJournal;
    use crate::wire::Entry;

    fn journal(n: u32) -> MemJournal {
        let mut j = MemJournal::new(1, 1_000);
        for i in 0..n {
            j.append(Entry::new(b"a", &i.to_be_bytes(), b"")).unwrap();
        }
        j
    }

    #[test]
    fn runs_coalesce_and_answer_only_while_the_journal_holds_them() {
        let j = journal(10);
        let mut g = Given::default();
        for seq in [2, 3, 4, 7, 8] {
            g.insert(seq, j.line(seq).unwrap().check);
        }
        assert_eq!(g.len(), 2);
        assert_eq!(g.run_at(&j, 1), None);
        assert_eq!(g.run_at(&j, 3), Some(4));
        assert_eq!(g.run_at(&j, 5), None);
        assert_eq!(g.run_at(&j, 7), Some(8));
        assert_eq!(g.run_at(&j, 9), None);
        // Another journal at the same numbers: nothing is believed.
        let other = MemJournal::new(1, 1_000);
        assert_eq!(g.run_at(&other, 3), None);
    }

    #[test]
    fn the_number_of_runs_is_bounded() {
        let j = journal(1_000);
        let mut g = Given::default();
        for seq in (1..1_000).step_by(2) {
            g.insert(seq, j.line(seq).unwrap().check);
        }
        assert_eq!(g.len(), MAX_RUNS);
        assert_eq!(g.run_at(&j, 1), None, "the oldest runs are forgotten");
        assert_eq!(g.run_at(&j, 999), Some(999));
    }
}
