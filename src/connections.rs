//! Counting open Socket.IO connections: in total (`MAX_CONNECTIONS`) and per user
//! (`MAX_CONNECTIONS_PER_USER`, when tokens are checked). A connection over either
//! limit is refused with `connect_error` "Too many connections".

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Which limit a refused connection hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitReached {
    #[error("the server holds MAX_CONNECTIONS connections")]
    Total,
    #[error("the user holds MAX_CONNECTIONS_PER_USER connections")]
    PerUser,
}

/// Counts open connections and refuses those over the limits.
pub struct ConnectionLimiter {
    /// `MAX_CONNECTIONS`.
    max_total: usize,
    /// `MAX_CONNECTIONS_PER_USER`.
    max_per_user: usize,
    /// Open connections in total, and per user for those counted per user.
    open: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_user: HashMap<String, usize>,
}

/// One counted connection; released once, explicitly or when dropped.
pub struct ConnectionSlot {
    limiter: Arc<ConnectionLimiter>,
    /// The user it counts against, when counted per user.
    user: Option<String>,
    released: AtomicBool,
}

impl std::fmt::Debug for ConnectionSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectionSlot")
    }
}

impl ConnectionLimiter {
    pub fn new(max_total: usize, max_per_user: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_user,
            open: Mutex::default(),
        })
    }

    /// Takes a slot, counted against `user` too when given.
    pub fn acquire(self: &Arc<Self>, user: Option<&str>) -> Result<ConnectionSlot, LimitReached> {
        let mut open = self.open.lock().expect("connection counts");
        if open.total >= self.max_total {
            return Err(LimitReached::Total);
        }
        if let Some(user) = user {
            let count = open.per_user.entry(user.to_owned()).or_insert(0);
            if *count >= self.max_per_user {
                if *count == 0 {
                    open.per_user.remove(user);
                }
                return Err(LimitReached::PerUser);
            }
            *count += 1;
        }
        open.total += 1;
        Ok(ConnectionSlot {
            limiter: self.clone(),
            user: user.map(str::to_owned),
            released: false.into(),
        })
    }

    /// Open connections now.
    pub fn open(&self) -> usize {
        self.open.lock().expect("connection counts").total
    }
}

impl ConnectionSlot {
    pub fn release(&self) {
        if self.released.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut open = self.limiter.open.lock().expect("connection counts");
        open.total -= 1;
        if let Some(user) = &self.user
            && let Some(count) = open.per_user.get_mut(user)
        {
            *count -= 1;
            if *count == 0 {
                open.per_user.remove(user);
            }
        }
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_counts_per_user() {
        let limiter = ConnectionLimiter::new(100, 2);
        let a = limiter.acquire(Some("u")).unwrap();
        let _b = limiter.acquire(Some("u")).unwrap();
        assert_eq!(
            limiter.acquire(Some("u")).unwrap_err(),
            LimitReached::PerUser
        );
        assert!(limiter.acquire(Some("v")).is_ok());
        a.release();
        a.release();
        assert!(limiter.acquire(Some("u")).is_ok());
    }

    #[test]
    fn limiter_counts_in_total() {
        let limiter = ConnectionLimiter::new(2, 10);
        let a = limiter.acquire(None).unwrap();
        let _b = limiter.acquire(Some("u")).unwrap();
        assert_eq!(limiter.acquire(None).unwrap_err(), LimitReached::Total);
        drop(a);
        let _c = limiter.acquire(Some("u")).unwrap();
        assert_eq!(limiter.open(), 2);
    }
}
