//! How claimed deliveries become requests, and what an answer means for each delivery of one —
//! pure functions, table-tested; the worker does the I/O.
//!
//! - [`chunks`]: deliveries of one config grouped by the provider's batch key (first-seen order
//!   kept), each group cut into requests of at most the provider's batch limit.
//! - [`judge`]: a whole-request `Dead` for a request of several items is never taken for each of
//!   them: the request is split in [`halves`] and each half sent again at once, down to single
//!   items, so one bad item never dead-letters its batch-mates. `Retry` and `AuthFailure` apply to
//!   every item; a per-item answer is taken item by item.

use crate::providers::{Answer, Outcome};

/// `members` grouped by key (groups in the order their first member came), each group cut into
/// runs of at most `limit` (at least 1), in order.
pub fn chunks<T>(members: Vec<(String, T)>, limit: usize) -> Vec<Vec<T>> {
    let limit = limit.max(1);
    let mut groups: Vec<(String, Vec<T>)> = Vec::new();
    for (key, m) in members {
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, g)) => g.push(m),
            None => groups.push((key, vec![m])),
        }
    }
    let mut out = Vec::new();
    for (_, g) in groups {
        let mut it = g.into_iter().peekable();
        while it.peek().is_some() {
            out.push(it.by_ref().take(limit).collect());
        }
    }
    out
}

/// The first of each list, then the second of each, and so on.
pub fn round_robin<T>(lists: Vec<Vec<T>>) -> Vec<T> {
    let mut iters: Vec<_> = lists.into_iter().map(Vec::into_iter).collect();
    let mut out = Vec::new();
    loop {
        let before = out.len();
        out.extend(iters.iter_mut().filter_map(Iterator::next));
        if out.len() == before {
            return out;
        }
    }
}

/// A refused request's items in two parts (the first the larger), to be sent again separately.
pub fn halves<T>(mut v: Vec<T>) -> (Vec<T>, Vec<T>) {
    let rest = v.split_off(v.len().div_ceil(2));
    (v, rest)
}

/// What to do with the answer to a request of `items` items.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// One outcome per item, in order: record them.
    Record(Vec<Outcome>),
    /// The whole request was refused and it carried several items: which one is to blame is
    /// unknown, so split it and send the parts again.
    Split,
}

pub fn judge(answer: Answer, items: usize, provider: &str) -> Next {
    match answer {
        Answer::All(Outcome::Dead { .. }) if items > 1 => Next::Split,
        Answer::All(o) => Next::Record(vec![o; items]),
        Answer::PerItem(v) if v.len() == items => Next::Record(v),
        // Not an answer about what was sent: nothing in it can be trusted, nothing is lost.
        Answer::PerItem(v) => Next::Record(vec![
            Outcome::Retry {
                reason: format!("{provider} answered for {} events, not the {items} sent", v.len())
            };
            items
        ]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyed(pairs: &[(&str, u32)]) -> Vec<(String, u32)> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn chunks_never_exceed_the_limit_nor_mix_keys() {
        type Case<'a> = (&'a [(&'a str, u32)], usize, &'a [&'a [u32]]);
        let cases: &[Case] = &[
            (&[], 3, &[]),
            (&[("", 1), ("", 2), ("", 3), ("", 4)], 1, &[&[1], &[2], &[3], &[4]]),
            (&[("", 1), ("", 2), ("", 3), ("", 4), ("", 5)], 2, &[&[1, 2], &[3, 4], &[5]]),
            (&[("a", 1), ("b", 2), ("a", 3), ("b", 4), ("c", 5)], 25, &[&[1, 3], &[2, 4], &[5]]),
            (&[("a", 1), ("a", 2), ("a", 3), ("b", 4)], 2, &[&[1, 2], &[3], &[4]]),
            (&[("", 1), ("", 2)], 0, &[&[1], &[2]]),
        ];
        for (members, limit, want) in cases {
            let got = chunks(keyed(members), *limit);
            let want: Vec<Vec<u32>> = want.iter().map(|c| c.to_vec()).collect();
            assert_eq!(got, want, "{members:?} by {limit}");
        }
    }

    #[test]
    fn requests_take_turns_across_configs() {
        assert_eq!(round_robin(vec![vec![1, 2, 3], vec![10], vec![20, 21]]), [1, 10, 20, 2, 21, 3]);
        assert_eq!(round_robin::<u8>(vec![vec![], vec![]]), Vec::<u8>::new());
    }

    #[test]
    fn halves_split_down_to_single_items() {
        assert_eq!(halves(vec![1, 2, 3, 4, 5]), (vec![1, 2, 3], vec![4, 5]));
        assert_eq!(halves(vec![1, 2]), (vec![1], vec![2]));
        assert_eq!(halves(vec![1]), (vec![1], vec![]));
    }

    #[test]
    fn answers_become_one_outcome_per_item() {
        let dead = Outcome::Dead { reason: "400".into() };
        let retry = Outcome::Retry { reason: "503".into() };
        let auth = Outcome::AuthFailure { reason: "401".into() };
        assert_eq!(judge(Answer::All(dead.clone()), 3, "p"), Next::Split, "never dead-letter a whole batch");
        assert_eq!(judge(Answer::All(dead.clone()), 1, "p"), Next::Record(vec![dead.clone()]));
        assert_eq!(judge(Answer::All(retry.clone()), 2, "p"), Next::Record(vec![retry.clone(), retry]));
        assert_eq!(judge(Answer::All(auth.clone()), 2, "p"), Next::Record(vec![auth.clone(), auth]));
        let per = vec![Outcome::Delivered, dead.clone()];
        assert_eq!(judge(Answer::PerItem(per.clone()), 2, "p"), Next::Record(per));
        match judge(Answer::PerItem(vec![Outcome::Delivered]), 2, "p") {
            Next::Record(v) => assert!(v.len() == 2 && v.iter().all(|o| matches!(o, Outcome::Retry { .. })), "{v:?}"),
            other => panic!("{other:?}"),
        }
    }
}
