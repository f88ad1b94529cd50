//! Admin-pages sessions: server-side, in memory. The cookie carries a random id (only its SHA-256
//! is kept); the session keeps the token *id*, never the token, and every request re-reads that
//! token, so revoking it ends the session at once. Sessions expire after `TTL` whatever their use,
//! and a restart signs everyone out (each instance has its own: behind a load balancer, use
//! sticky sessions). Each session has its CSRF token, which every form carries in a hidden field.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use axum::http::{HeaderMap, header};
use uuid::Uuid;

use crate::{crypto, rate_limit::RateLimiter};

/// How long a session lasts from sign-in.
pub const TTL: Duration = Duration::from_secs(8 * 3600);
/// Sign-in attempts per client IP per minute.
pub const SIGN_INS_PER_MINUTE: u32 = 10;
pub const COOKIE: &str = "cg_admin";
/// Sessions kept at most; past it the tenant holding the most loses its oldest, so one tenant's
/// admin signing in with many tokens cannot push other tenants' users out.
const MAX_SESSIONS: usize = 10_000;
/// Sessions of one token at most (browsers and tabs); a new one ends that token's oldest, so one
/// token signing in over and over cannot push everyone else's sessions out.
const MAX_SESSIONS_PER_TOKEN: usize = 20;

#[derive(Clone, Debug)]
pub struct Session {
    pub token_id: Uuid,
    /// The token's tenant (its id): what the cap on all sessions is shared out by.
    tenant_id: Uuid,
    pub csrf: String,
    expires: Instant,
    /// A message shown once, on the next page (after a change and its redirect).
    pub flash: Option<String>,
}

#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
    /// The brake on guessing tokens.
    pub sign_ins: RateLimiter<Option<IpAddr>>,
}

impl Sessions {
    /// Starts a session for the token of the tenant `tenant_id`; returns the cookie value.
    pub fn start(&self, token_id: Uuid, tenant_id: Uuid) -> String {
        let id = crypto::random_hex(32);
        let expires = Instant::now() + TTL;
        let session = Session { token_id, tenant_id, csrf: crypto::random_hex(32), expires, flash: None };
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        map.retain(|_, s| s.expires > now);
        // A token signing in again and again ends its own oldest sessions, not other people's.
        let own: Vec<(String, Instant)> =
            map.iter().filter(|(_, s)| s.token_id == token_id).map(|(k, s)| (k.clone(), s.expires)).collect();
        if own.len() >= MAX_SESSIONS_PER_TOKEN
            && let Some((oldest, _)) = own.into_iter().min_by_key(|(_, expires)| *expires)
        {
            map.remove(&oldest);
        }
        if map.len() >= MAX_SESSIONS {
            // The oldest session of the tenant that holds the most.
            let mut held: HashMap<Uuid, usize> = HashMap::new();
            for s in map.values() {
                *held.entry(s.tenant_id).or_default() += 1;
            }
            let busiest = held.into_iter().max_by_key(|(_, n)| *n).map(|(t, _)| t);
            let oldest = map.iter().filter(|(_, s)| Some(s.tenant_id) == busiest).min_by_key(|(_, s)| s.expires);
            if let Some(k) = oldest.map(|(k, _)| k.clone()) {
                map.remove(&k);
            }
        }
        map.insert(crypto::sha256_hex(&id), session);
        id
    }

    /// The live session behind the request's cookie; its flash message is taken.
    pub fn find(&self, headers: &HeaderMap) -> Option<(String, Session)> {
        let id = cookie(headers)?;
        let key = crypto::sha256_hex(id);
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let s = map.get_mut(&key)?;
        if s.expires <= Instant::now() {
            map.remove(&key);
            return None;
        }
        let found = s.clone();
        s.flash = None;
        Some((key, found))
    }

    pub fn flash(&self, key: &str, message: String) {
        if let Some(s) = self.map.lock().unwrap_or_else(|e| e.into_inner()).get_mut(key) {
            s.flash = Some(message);
        }
    }

    pub fn end(&self, key: &str) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
}

/// The session cookie's value, if the request has one.
fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// `Secure` unless the gateway's public URL is plain HTTP on the loopback (the tests and a local
/// try-out): a browser would not send a `Secure` cookie there.
pub fn secure(public_url: &str) -> bool {
    let Some(rest) = public_url.strip_prefix("http://") else { return true };
    let host = rest.split('/').next().unwrap_or_default();
    let host = host.rsplit_once(':').map_or(host, |(h, port)| if port.contains(']') { host } else { h });
    !matches!(host, "127.0.0.1" | "localhost" | "[::1]")
}

pub fn set_cookie(value: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={value}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age={}{secure}", TTL.as_secs())
}

pub fn clear_cookie(secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}=; Path=/admin; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_except_on_plain_http_loopback() {
        for (url, want) in [
            ("https://gw.example", true),
            ("http://gw.example", true),
            ("http://127.0.0.1:8080", false),
            ("http://localhost:3000/", false),
            ("http://[::1]:80", false),
            ("http://127.0.0.1.evil.example", true),
            ("https://127.0.0.1", true),
        ] {
            assert_eq!(secure(url), want, "{url}");
        }
    }

    #[test]
    fn a_session_is_found_by_its_cookie_and_ends() {
        let sessions = Sessions::default();
        let token = Uuid::now_v7();
        let id = sessions.start(token, Uuid::now_v7());
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, format!("other=1; {COOKIE}={id}").parse().unwrap());
        let (key, s) = sessions.find(&headers).unwrap();
        assert_eq!(s.token_id, token);
        sessions.flash(&key, "done".into());
        assert_eq!(sessions.find(&headers).unwrap().1.flash.as_deref(), Some("done"));
        assert_eq!(sessions.find(&headers).unwrap().1.flash, None, "shown once");
        sessions.end(&key);
        assert!(sessions.find(&headers).is_none());
        headers.insert(header::COOKIE, format!("{COOKIE}=forged").parse().unwrap());
        assert!(sessions.find(&headers).is_none());
    }

    /// A request carrying the session cookie `id`.
    fn cookie(id: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, format!("{COOKIE}={id}").parse().unwrap());
        headers
    }

    #[test]
    fn a_token_signing_in_over_and_over_ends_only_its_own_sessions() {
        let sessions = Sessions::default();
        let tenant = Uuid::now_v7();
        let someone_else = sessions.start(Uuid::now_v7(), tenant);
        let noisy = Uuid::now_v7();
        let first = sessions.start(noisy, tenant);
        for _ in 0..MAX_SESSIONS_PER_TOKEN * 3 {
            sessions.start(noisy, tenant);
        }
        assert!(sessions.find(&cookie(&someone_else)).is_some(), "another token's session stays");
        assert!(sessions.find(&cookie(&first)).is_none(), "the noisy token's oldest went");
        let map = sessions.map.lock().unwrap();
        assert_eq!(map.values().filter(|s| s.token_id == noisy).count(), MAX_SESSIONS_PER_TOKEN);
    }

    /// One tenant's admin signs in with token after token until every session slot is taken:
    /// the sessions that go are that tenant's, never another tenant's.
    #[test]
    fn a_tenant_filling_every_slot_ends_its_own_sessions_not_other_tenants() {
        let sessions = Sessions::default();
        let victim = sessions.start(Uuid::now_v7(), Uuid::now_v7());
        let (noisy, mut first) = (Uuid::now_v7(), None);
        for i in 0..MAX_SESSIONS + 50 {
            let id = sessions.start(Uuid::now_v7(), noisy);
            if i == 0 {
                first = Some(id);
            }
        }
        assert!(sessions.find(&cookie(&victim)).is_some(), "another tenant's session stays");
        assert!(sessions.find(&cookie(&first.unwrap())).is_none(), "the noisy tenant's oldest went");
        assert_eq!(sessions.map.lock().unwrap().len(), MAX_SESSIONS);
    }
}
