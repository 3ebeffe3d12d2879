//! Urgent data in the region: what the agent publishes of the peer's urgent byte
//! (`SockState::urgent`) and the `F_SETOWN` owner the host records for `SIGURG`
//! (`SockHost::owner`). Each is one 64-bit word, so a reader never sees half an update.

/// The peer's last urgent byte, as the agent publishes it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Urgent {
    /// Differs for every new urgent pointer; never 0 once one arrived.
    pub gen: u16,
    /// The byte, once it arrived (Linux's `TCP_URG_VALID`); `None` while only the pointer is
    /// known (`TCP_URG_NOTYET`).
    pub byte: Option<u8>,
    /// The RX stream index of the urgent byte, once the agent's reading reached it. The byte is
    /// in the stream there; the host's reads skip it unless the socket has `SO_OOBINLINE`.
    /// `None`: every byte in the stream so far comes before it.
    pub mark: Option<u32>,
}

const VALID: u64 = 1 << 40;
const MARKED: u64 = 1 << 41;

impl Urgent {
    pub fn pack(self) -> u64 {
        let mut v = u64::from(self.gen) << 48;
        if let Some(b) = self.byte {
            v |= VALID | (u64::from(b) << 32);
        }
        if let Some(m) = self.mark {
            v |= MARKED | u64::from(m);
        }
        v
    }

    /// `None` for 0 (no urgent data yet) or a word without a generation.
    pub fn unpack(v: u64) -> Option<Urgent> {
        let gen = (v >> 48) as u16;
        if gen == 0 {
            return None;
        }
        Some(Urgent {
            gen,
            byte: (v & VALID != 0).then_some((v >> 32) as u8),
            mark: (v & MARKED != 0).then_some(v as u32),
        })
    }

    /// The generation after `g` (skipping 0).
    pub fn next_gen(g: u16) -> u16 {
        match g.wrapping_add(1) {
            0 => 1,
            n => n,
        }
    }
}

/// Who gets `SIGURG` (`fcntl(F_SETOWN)`, `F_SETOWN_EX`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// A process (`F_SETOWN` with a positive id, `F_OWNER_PID`).
    Pid(i32),
    /// A process group (`F_SETOWN` with a negative id, `F_OWNER_PGRP`).
    Pgrp(i32),
    /// One thread (`F_OWNER_TID`).
    Tid(i32),
}

impl Owner {
    /// 0 for none.
    pub fn pack(o: Option<Owner>) -> u64 {
        let (kind, id) = match o {
            None => return 0,
            Some(Owner::Pid(p)) => (1u64, p),
            Some(Owner::Pgrp(g)) => (2, g),
            Some(Owner::Tid(t)) => (3, t),
        };
        (kind << 32) | u64::from(id as u32)
    }

    pub fn unpack(v: u64) -> Option<Owner> {
        let id = v as u32 as i32;
        match v >> 32 {
            1 => Some(Owner::Pid(id)),
            2 => Some(Owner::Pgrp(id)),
            3 => Some(Owner::Tid(id)),
            _ => None,
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn urgent_words_round_trip_and_zero_is_none() {
        assert_eq!(Urgent::unpack(0), None);
        for u in [
            Urgent {
                gen: 1,
                byte: None,
                mark: None,
            },
            Urgent {
                gen: u16::MAX,
                byte: Some(0),
                mark: Some(0),
            },
            Urgent {
                gen: 7,
                byte: Some(0xff),
                mark: Some(u32::MAX),
            },
        ] {
            assert_eq!(Urgent::unpack(u.pack()), Some(u));
        }
        assert_eq!(Urgent::next_gen(u16::MAX), 1);
        assert_eq!(Urgent::next_gen(0), 1);
    }

    #[test]
    fn owners_round_trip() {
        assert_eq!(Owner::unpack(0), None);
        for o in [
            Owner::Pid(1),
            Owner::Pgrp(i32::MAX),
            Owner::Tid(77),
            Owner::Pid(-1),
        ] {
            assert_eq!(Owner::unpack(Owner::pack(Some(o))), Some(o));
        }
        assert_eq!(Owner::pack(None), 0);
    }
}
