//! Helpers for the result blocks handed to C: plain structs that C reads
//! directly, allocated with the strings and arrays they point to in one
//! owned block and freed in one call.

use std::ffi::{c_char, CString};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::info::KeyValue;

/// The C strings that one result block points into. Moving it moves none
/// of their heap buffers, so the pointers handed out stay valid while it
/// lives.
#[derive(Debug, Default)]
pub struct Strings(Vec<CString>);

impl Strings {
    /// Stores a copy of `text` and returns a pointer to it.
    pub fn keep(&mut self, text: &str) -> *const c_char {
        self.keep_bytes(text.as_bytes())
    }

    /// Stores a copy of `bytes`, which need not be UTF-8, and returns a
    /// pointer to it. A NUL byte, which C cannot represent inside a
    /// string, becomes U+FFFD.
    pub fn keep_bytes(&mut self, bytes: &[u8]) -> *const c_char {
        let string = c_string(bytes);
        let ptr = string.as_ptr();
        self.0.push(string);
        ptr
    }

    /// Stores each key and value and returns the pairs pointing to them.
    pub fn key_values<'a>(
        &mut self,
        pairs: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> Vec<KeyValue> {
        pairs
            .into_iter()
            .map(|(key, value)| KeyValue {
                key: self.keep(key),
                value: self.keep(value),
            })
            .collect()
    }
}

/// Copies `bytes` into a C string; a NUL byte becomes U+FFFD.
fn c_string(bytes: &[u8]) -> CString {
    let mut text = Vec::with_capacity(bytes.len());
    for &byte in bytes {
        match byte {
            0 => text.extend_from_slice("\u{fffd}".as_bytes()),
            other => text.push(other),
        }
    }
    CString::new(text).expect("NUL bytes were replaced")
}

/// Returns `time` in milliseconds since the Unix epoch; times before the
/// epoch are 0.
pub fn millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |since| {
        i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
    })
}

/// Returns the pointer that C gets for an array: NULL when it is empty.
pub fn array_ptr<T>(items: &[T]) -> *const T {
    if items.is_empty() {
        std::ptr::null()
    } else {
        items.as_ptr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_and_earlier_times_are_zero() {
        assert_eq!(millis(UNIX_EPOCH), 0);
        let before = UNIX_EPOCH - std::time::Duration::from_secs(5);
        assert_eq!(millis(before), 0);
    }

    #[test]
    fn nul_in_string_is_replaced() {
        let mut strings = Strings::default();
        let ptr = strings.keep_bytes(b"a\0b\xff");
        assert_eq!(ptr, strings.0[0].as_ptr());
        assert_eq!(strings.0[0].to_bytes(), b"a\xef\xbf\xbdb\xff");
    }

    #[test]
    fn empty_array_is_null() {
        assert!(array_ptr::<u8>(&[]).is_null());
        assert!(!array_ptr(&[1u8]).is_null());
    }
}
