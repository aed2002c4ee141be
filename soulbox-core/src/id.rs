//! Sandbox ids: `sb-` followed by 12 random lowercase letters and digits.
//! An id is also the sandbox's hostname and its cgroup directory name.

use crate::sys;

const PREFIX: &str = "sb-";
const RANDOM_LEN: usize = 12;
const ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";

/// Generates a new random sandbox id.
pub fn new_sandbox_id() -> std::io::Result<String> {
    let mut random = [0u8; RANDOM_LEN];
    sys::fill_random(&mut random)?;
    let mut id = String::with_capacity(PREFIX.len() + RANDOM_LEN);
    id.push_str(PREFIX);
    // 32 symbols, so the low five bits of each byte pick one without bias.
    id.extend(random.iter().map(|b| ALPHABET[usize::from(b & 31)] as char));
    Ok(id)
}

/// Returns 32 random bits.
pub fn random_u32() -> std::io::Result<u32> {
    let mut random = [0u8; 4];
    sys::fill_random(&mut random)?;
    Ok(u32::from_ne_bytes(random))
}

/// Returns whether `name` has the shape of a sandbox id.
pub fn is_sandbox_id(name: &str) -> bool {
    name.strip_prefix(PREFIX)
        .is_some_and(|rest| rest.len() == RANDOM_LEN && rest.bytes().all(|b| ALPHABET.contains(&b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_have_sandbox_shape() {
        let id = new_sandbox_id().unwrap();
        assert!(is_sandbox_id(&id), "{id}");
        assert_ne!(id, new_sandbox_id().unwrap());
    }

    #[test]
    fn other_names_rejected() {
        for name in [
            "",
            "sb-",
            "sb-ABCDEFGHJKLM",
            "xx-abcdefghjkmn",
            "sb-abcdefghjkmn/",
        ] {
            assert!(!is_sandbox_id(name), "{name}");
        }
    }
}
