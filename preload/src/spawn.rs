//! `posix_spawn`: offloaded fds that survive into the spawned image are handed over with a ticket,
//! as for exec. glibc's `posix_spawn_file_actions_t` is opaque, so the `add*` hooks record each
//! fd action here, keyed by the address of the actions object, and the spawn hook replays them
//! to learn which fd numbers the child will hold.

use crate::exec::Act;
use crate::util::SpinMutex;

/// (address of a `posix_spawn_file_actions_t`, its fd actions in order). Not on any path a signal
/// handler reaches: these are the application's own spawn calls.
static ACTIONS: SpinMutex<Vec<(usize, Vec<Act>)>> = SpinMutex::new(Vec::new());

/// `init`/`destroy`: forget whatever an earlier object at this address recorded.
pub(crate) fn reset(fa: usize) {
    ACTIONS.lock().retain(|(k, _)| *k != fa);
}

pub(crate) fn record(fa: usize, a: Act) {
    let mut t = ACTIONS.lock();
    match t.iter_mut().find(|(k, _)| *k == fa) {
        Some((_, v)) => v.push(a),
        None => t.push((fa, vec![a])),
    }
}

/// The actions recorded for `fa` (none for a null pointer or an object we never saw).
pub(crate) fn actions(fa: usize) -> Vec<Act> {
    if fa == 0 {
        return Vec::new();
    }
    ACTIONS
        .lock()
        .iter()
        .find(|(k, _)| *k == fa)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_are_kept_per_object_in_order() {
        reset(0x1000);
        reset(0x2000);
        record(0x1000, Act::Dup2(5, 0));
        record(0x2000, Act::Close(3));
        record(0x1000, Act::Close(5));
        assert_eq!(actions(0x1000), vec![Act::Dup2(5, 0), Act::Close(5)]);
        assert_eq!(actions(0x2000), vec![Act::Close(3)]);
        reset(0x1000);
        assert!(actions(0x1000).is_empty());
        assert!(actions(0).is_empty());
    }
}
