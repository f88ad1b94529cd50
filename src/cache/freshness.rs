//! The pure rules of the config cache: when an entry may still be used, and which entries a
//! poll of the generations makes stale.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use uuid::Uuid;

/// Whether an entry loaded at `loaded_at` may still answer at `now`: for `max_age` after its load,
/// whatever the polls say. Past it the entry is read again — so a change no poll reports (the
/// polls fail, or someone edited the database directly) applies within `max_age`, and if the
/// database cannot answer the reload, the request fails (closed) instead of using old rows.
pub fn usable(loaded_at: Instant, now: Instant, max_age: Duration) -> bool {
    now.saturating_duration_since(loaded_at) <= max_age
}

/// The tenants among `cached` (tenant, generation the entry was loaded under) whose generation
/// in the database (`current`; a tenant without a row is at 0) differs: their entries go.
/// Different, not greater: a generation that went backwards (a restored backup) is a change too.
pub fn stale(cached: &[(Uuid, i64)], current: &HashMap<Uuid, i64>) -> Vec<Uuid> {
    cached.iter().filter(|(id, g)| current.get(id).copied().unwrap_or(0) != *g).map(|(id, _)| *id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_usable_up_to_max_age_after_their_load() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        for (now, want) in [(t0, true), (t0 + s(4), true), (t0 + s(5), true), (t0 + s(6), false)] {
            assert_eq!(usable(t0, now, s(5)), want, "{:?} after the load", now - t0);
        }
        // A clock reading before the load (another thread's) is not an expiry.
        assert!(usable(t0 + s(1), t0, s(5)));
    }

    #[test]
    fn a_moved_generation_makes_its_tenant_stale() {
        let (a, b, c, d) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let current = HashMap::from([(a, 3), (b, 5), (d, 1)]);
        // a: unchanged; b: moved on; c: no row and loaded at 0; d: first change since the load.
        let cached = [(a, 3), (b, 4), (c, 0), (d, 0)];
        assert_eq!(stale(&cached, &current), vec![b, d]);
        assert_eq!(stale(&[(a, 4)], &current), vec![a], "backwards counts as a change");
        assert!(stale(&[], &current).is_empty());
    }
}
