//! Dashboard sessions: an API token, checked once at login, becomes a random
//! session id in a cookie. Kept in memory only: a restarted server asks for
//! the token again, which is cheaper than storing anything secret.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use rand::Rng;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "wharf_ui";
/// A session unused this long is gone.
pub(crate) const IDLE: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at once; a login beyond it ends the least recently used.
pub(crate) const MAX_SESSIONS: usize = 1024;

struct Session {
    /// Every state-changing form carries it; a POST without it is refused.
    csrf: String,
    /// Logged in with the read-only token: pages, no actions.
    read_only: bool,
    last_seen: Instant,
}

/// The live sessions, by id.
pub(crate) struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
    idle: Duration,
    max: usize,
}

impl Sessions {
    pub(crate) fn new(idle: Duration, max: usize) -> Sessions {
        Sessions { by_id: Mutex::new(HashMap::new()), idle, max: max.max(1) }
    }

    /// A new session: its id (for the cookie) and its CSRF token.
    pub(crate) fn create(&self, read_only: bool) -> (String, String) {
        let (id, csrf) = (random_hex(), random_hex());
        let now = Instant::now();
        let mut map = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, s| now.saturating_duration_since(s.last_seen) < self.idle);
        while map.len() >= self.max {
            let Some(oldest) = map.iter().min_by_key(|(_, s)| s.last_seen).map(|(k, _)| k.clone()) else { break };
            map.remove(&oldest);
        }
        map.insert(id.clone(), Session { csrf: csrf.clone(), read_only, last_seen: now });
        (id, csrf)
    }

    /// The CSRF token of a live session, marking it used; None for an
    /// unknown or expired id.
    pub(crate) fn touch(&self, id: &str) -> Option<String> {
        let now = Instant::now();
        let mut map = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        let s = map.get_mut(id)?;
        if now.saturating_duration_since(s.last_seen) >= self.idle {
            map.remove(id);
            return None;
        }
        s.last_seen = now;
        Some(s.csrf.clone())
    }

    /// Whether the session was started with the read-only token (an
    /// unknown one counts as read-only: nothing is allowed for it).
    pub(crate) fn read_only(&self, id: &str) -> bool {
        let map = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        map.get(id).is_none_or(|s| s.read_only)
    }

    /// Whether the session still exists, without marking it used (a live
    /// stream alone must not keep a session from expiring).
    pub(crate) fn alive(&self, id: &str) -> bool {
        let map = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        map.get(id).is_some_and(|s| Instant::now().saturating_duration_since(s.last_seen) < self.idle)
    }

    pub(crate) fn remove(&self, id: &str) {
        self.by_id.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }
}

/// 32 random bytes from the thread's CSPRNG, as hex.
fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The session id the request's `Cookie` header carries, if any.
pub(crate) fn cookie_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
}

/// Whether the browser reached us over HTTPS: the API listener speaks plain
/// HTTP, so this is a TLS-terminating proxy in front saying so.
pub(crate) fn over_https(headers: &HeaderMap) -> bool {
    headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// The `Set-Cookie` value for a session (`id`), or one that clears it (`None`).
pub(crate) fn set_cookie(id: Option<&str>, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    match id {
        Some(id) => format!("{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict{secure}"),
        None => format!("{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_and_are_bounded() {
        let s = Sessions::new(Duration::from_secs(3600), 2);
        let (a, csrf) = s.create(false);
        assert_eq!(s.touch(&a).as_deref(), Some(csrf.as_str()));
        let (b, _) = s.create(false);
        let (c, _) = s.create(false);
        assert!(s.touch(&a).is_none(), "the least recently used session makes room");
        assert!(s.touch(&b).is_some() && s.touch(&c).is_some());
        s.remove(&b);
        assert!(s.touch(&b).is_none());

        let gone = Sessions::new(Duration::ZERO, 4);
        let (d, _) = gone.create(false);
        assert!(gone.touch(&d).is_none() && !gone.alive(&d));
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(axum::http::header::COOKIE, "a=1; wharf_ui=abc; b=2".parse().unwrap());
        assert_eq!(cookie_id(&h).as_deref(), Some("abc"));
        assert!(set_cookie(Some("abc"), true).ends_with("; Secure"));
        assert!(!set_cookie(Some("abc"), false).contains("Secure"));
    }
}
