//! The pure rules of the config cache: when an entry may still be used, and which entries a
//! poll of the generations makes stale.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use uuid::Uuid;

/// Whether an entry loaded at `loaded_at` may answer at `now`. An entry is as fresh as the later
/// of its load and the last successful poll (`verified_at`, the instant that poll began: every
/// change committed before it was seen). Past `max_age` it is not used: if the polls fail, the
/// entry is read again from the database (and if that fails too, the request fails — closed).
pub fn usable(loaded_at: Instant, verified_at: Option<Instant>, now: Instant, max_age: Duration) -> bool {
    let fresh_as_of = verified_at.map_or(loaded_at, |v| v.max(loaded_at));
    now.saturating_duration_since(fresh_as_of) <= max_age
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
    fn entries_are_usable_up_to_max_age_after_their_load_or_the_last_good_poll() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let max = s(5);
        for (loaded, verified, now, want, why) in [
            (t0, None, t0, true, "just loaded"),
            (t0, None, t0 + s(5), true, "exactly max age"),
            (t0, None, t0 + s(6), false, "never verified, too old"),
            (t0, Some(t0 + s(4)), t0 + s(8), true, "a poll after the load vouches for it"),
            (t0, Some(t0 + s(4)), t0 + s(10), false, "polls stopped succeeding"),
            (t0 + s(4), Some(t0), t0 + s(8), true, "loaded after the last poll"),
            (t0 + s(4), Some(t0), t0 + s(10), false, "loaded after the last poll, too old"),
        ] {
            assert_eq!(usable(loaded, verified, now, max), want, "{why}");
        }
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
