//! Who gets a connection slot: the global limit, the per-address limit, the slots
//! kept for the admin role, and the eviction of connections still in their handshake.
//!
//! Every accepted socket asks [`Admission::admit`] for a [`Ticket`] before anything is
//! read from it. The rules, in order:
//!
//! 1. An address already holding `max_connections_per_address` connections evicts its
//!    own oldest connection that has not completed `HELLO` and takes its slot; with
//!    none to evict it may still take an admin slot (rule 3), else it is refused.
//! 2. Below `max_connections`, a connection takes a regular slot.
//! 3. At the limit, it evicts the oldest connection (of any address) still in its
//!    handshake and takes its slot; with none to evict it takes one of the
//!    `admin_reserved_connections` slots, which is kept after `HELLO` only if the
//!    granted role is admin ([`Ticket::hello_done`]); with none free it is refused.
//!
//! So sockets that never speak cannot lock anyone out: they hold a slot only until a
//! newcomer needs it (or the handshake deadline closes them), and a client that
//! completes `HELLO` in a round trip is never the oldest one waiting. An evicted
//! connection is told through [`Ticket::evicted`] and closes with `ERROR BUSY`.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tallydb_protocol::Role;
use tokio::sync::oneshot;

/// The limits [`Admission`] enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionLimits {
    /// Regular slots.
    pub max_connections: usize,
    /// Most connections (regular and admin slots) from one IP address.
    pub max_per_address: usize,
    /// Slots beyond `max_connections` for admin sessions only.
    pub admin_reserved: usize,
}

/// Why a connection was refused a slot (answered `ERROR BUSY`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// Every regular and admin slot is held by a connection past its handshake.
    #[error("too many connections: the limit is {limit}; retry later")]
    Full {
        /// `max_connections`.
        limit: usize,
    },
    /// The address holds its share of connections, all past their handshake.
    #[error("too many connections from {addr}: the limit per address is {limit}; retry later")]
    PerAddress {
        /// The client's address.
        addr: IpAddr,
        /// `max_connections_per_address`.
        limit: usize,
    },
    /// The connection got a slot kept for the admin role, and `HELLO` granted another.
    #[error("too many connections: the limit is {limit} and the remaining slots are kept for the admin role; retry later")]
    AdminOnly {
        /// `max_connections`.
        limit: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Regular,
    Admin,
}

#[derive(Debug)]
struct Entry {
    ip: IpAddr,
    slot: Slot,
    /// On an admin slot: the refusal a non-admin session gets.
    unless_admin: Option<Refusal>,
    /// Set while the connection has not completed `HELLO`: how to evict it.
    evict: Option<oneshot::Sender<()>>,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    regular: usize,
    admin: usize,
    by_addr: HashMap<IpAddr, usize>,
    /// Connections holding a slot, in admission order (oldest first).
    live: BTreeMap<u64, Entry>,
}

impl State {
    /// Removes a connection and gives back its slot.
    fn release(&mut self, id: u64) -> Option<Entry> {
        let entry = self.live.remove(&id)?;
        match entry.slot {
            Slot::Regular => self.regular -= 1,
            Slot::Admin => self.admin -= 1,
        }
        if let Some(n) = self.by_addr.get_mut(&entry.ip) {
            *n -= 1;
            if *n == 0 {
                self.by_addr.remove(&entry.ip);
            }
        }
        Some(entry)
    }

    /// Evicts the oldest connection still in its handshake (from `ip` if given),
    /// returning the kind of slot it freed.
    fn evict_oldest(&mut self, ip: Option<IpAddr>) -> Option<Slot> {
        let id = self
            .live
            .iter()
            .find(|(_, e)| e.evict.is_some() && ip.is_none_or(|ip| e.ip == ip))
            .map(|(id, _)| *id)?;
        let entry = self.release(id)?;
        if let Some(tx) = entry.evict {
            // The connection may be ending on its own already; either way it is gone.
            let _ = tx.send(());
        }
        Some(entry.slot)
    }
}

/// The server's connection slots; shared by the accept loop and every connection.
#[derive(Debug)]
pub struct Admission {
    limits: AdmissionLimits,
    state: Mutex<State>,
}

impl Admission {
    /// Slots for `limits`.
    pub fn new(limits: AdmissionLimits) -> Arc<Self> {
        Arc::new(Admission {
            limits,
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is consistent after every statement: a panic elsewhere cannot
        // leave it half-updated, so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A slot for a new connection from `ip`, following the module's rules.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Ticket, Refusal> {
        let l = self.limits;
        let mut st = self.lock();
        let from_ip = st.by_addr.get(&ip).copied().unwrap_or(0);
        let (slot, refusal) = if from_ip >= l.max_per_address {
            let refusal = Refusal::PerAddress {
                addr: ip,
                limit: l.max_per_address,
            };
            (st.evict_oldest(Some(ip)), refusal)
        } else if st.regular < l.max_connections {
            (
                Some(Slot::Regular),
                Refusal::Full {
                    limit: l.max_connections,
                },
            )
        } else {
            let refusal = Refusal::AdminOnly {
                limit: l.max_connections,
            };
            (st.evict_oldest(None), refusal)
        };
        let slot = match slot {
            Some(slot) => slot,
            None if st.admin < l.admin_reserved => Slot::Admin,
            None if matches!(refusal, Refusal::AdminOnly { .. }) => {
                return Err(Refusal::Full {
                    limit: l.max_connections,
                })
            }
            None => return Err(refusal),
        };
        let unless_admin = (slot == Slot::Admin).then_some(refusal);
        match slot {
            Slot::Regular => st.regular += 1,
            Slot::Admin => st.admin += 1,
        }
        *st.by_addr.entry(ip).or_insert(0) += 1;
        let id = st.next_id;
        st.next_id += 1;
        let (tx, rx) = oneshot::channel();
        st.live.insert(
            id,
            Entry {
                ip,
                slot,
                unless_admin,
                evict: Some(tx),
            },
        );
        Ok(Ticket {
            admission: Arc::clone(self),
            id,
            evicted: Some(rx),
        })
    }

    /// Connections holding a slot: (regular, admin).
    pub fn open(&self) -> (usize, usize) {
        let st = self.lock();
        (st.regular, st.admin)
    }
}

/// One connection's slot, given back when dropped.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    id: u64,
    evicted: Option<oneshot::Receiver<()>>,
}

impl Ticket {
    /// Completes when a newcomer evicts this connection (only possible before
    /// [`Ticket::hello_done`]); never completes otherwise.
    pub async fn evicted(&mut self) {
        if let Some(rx) = self.evicted.as_mut() {
            let evicted = rx.await.is_ok();
            self.evicted = None;
            if evicted {
                return;
            }
        }
        std::future::pending::<()>().await;
    }

    /// For a connection on a slot kept for the admin role: the refusal it gets unless
    /// `HELLO` grants admin (also the answer when its handshake times out).
    pub fn unless_admin(&self) -> Option<Refusal> {
        let st = self.admission.lock();
        st.live.get(&self.id)?.unless_admin.clone()
    }

    /// Records that `HELLO` granted `role`: the connection can no longer be evicted.
    /// A connection on an admin slot is refused unless `role` is admin.
    pub fn hello_done(&mut self, role: Role) -> Result<(), Refusal> {
        self.evicted = None;
        let mut st = self.admission.lock();
        let Some(entry) = st.live.get_mut(&self.id) else {
            // Evicted just now, between the handshake and this call.
            return Err(Refusal::Full {
                limit: self.admission.limits.max_connections,
            });
        };
        entry.evict = None;
        match &entry.unless_admin {
            Some(refusal) if role != Role::Admin => Err(refusal.clone()),
            _ => Ok(()),
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admission.lock().release(self.id);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    fn admission(max: usize, per: usize, admin: usize) -> Arc<Admission> {
        Admission::new(AdmissionLimits {
            max_connections: max,
            max_per_address: per,
            admin_reserved: admin,
        })
    }

    #[test]
    fn a_full_server_evicts_the_oldest_connection_in_its_handshake() {
        let a = admission(2, 10, 0);
        let mut first = a.admit(ip(1)).unwrap();
        let mut second = a.admit(ip(2)).unwrap();
        second.hello_done(Role::Read).unwrap();
        let mut third = a.admit(ip(3)).unwrap();
        assert_eq!(a.open(), (2, 0));
        // The first was evicted; the second, past HELLO, was not.
        assert_eq!(
            first.evicted.as_mut().unwrap().try_recv(),
            Ok(()),
            "the oldest connection in its handshake is told to go"
        );
        third.hello_done(Role::Read).unwrap();
        assert_eq!(
            a.admit(ip(4)).unwrap_err(),
            Refusal::Full { limit: 2 },
            "nobody left to evict"
        );
        drop(first);
        assert_eq!(
            a.open(),
            (2, 0),
            "an evicted ticket gives nothing back twice"
        );
        drop(second);
        assert_eq!(a.open(), (1, 0));
        drop(third);
        assert_eq!(a.open(), (0, 0));
        assert!(a.lock().by_addr.is_empty());
    }

    #[test]
    fn admin_slots_keep_only_admin_sessions() {
        let a = admission(1, 10, 1);
        let mut held = a.admit(ip(1)).unwrap();
        held.hello_done(Role::Read).unwrap();
        let mut reader = a.admit(ip(2)).unwrap();
        assert_eq!(a.open(), (1, 1));
        assert_eq!(
            reader.hello_done(Role::Write).unwrap_err(),
            Refusal::AdminOnly { limit: 1 }
        );
        drop(reader);
        let mut admin = a.admit(ip(2)).unwrap();
        admin.hello_done(Role::Admin).unwrap();
        assert!(matches!(a.admit(ip(3)), Err(Refusal::Full { .. })));
    }

    #[test]
    fn an_address_at_its_limit_evicts_its_own_silent_connection_only() {
        let a = admission(10, 2, 0);
        let mut other = a.admit(ip(9)).unwrap();
        let mut one = a.admit(ip(1)).unwrap();
        let mut two = a.admit(ip(1)).unwrap();
        two.hello_done(Role::Read).unwrap();
        let mut three = a.admit(ip(1)).unwrap();
        assert_eq!(one.evicted.as_mut().unwrap().try_recv(), Ok(()));
        assert!(other.evicted.as_mut().unwrap().try_recv().is_err());
        three.hello_done(Role::Read).unwrap();
        assert_eq!(
            a.admit(ip(1)).unwrap_err(),
            Refusal::PerAddress {
                addr: ip(1),
                limit: 2
            }
        );
        other.hello_done(Role::Read).unwrap();
        assert!(a.admit(ip(2)).is_ok(), "other addresses are still served");

        // With admin slots, an address at its limit still lets an admin in.
        let a = admission(10, 1, 1);
        let mut held = a.admit(ip(1)).unwrap();
        held.hello_done(Role::Read).unwrap();
        let mut reader = a.admit(ip(1)).unwrap();
        assert_eq!(
            reader.hello_done(Role::Read).unwrap_err(),
            Refusal::PerAddress {
                addr: ip(1),
                limit: 1
            }
        );
        drop(reader);
        a.admit(ip(1)).unwrap().hello_done(Role::Admin).unwrap();
    }
}
