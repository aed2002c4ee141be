//! The host decodes PID 1's replies, which sandboxed code could forge if it
//! ever reached the socket; no input may panic the host.
#![no_main]

use libfuzzer_sys::fuzz_target;
use soulbox_proto::Reply;

fuzz_target!(|data: &[u8]| {
    if let Ok(reply) = Reply::decode(data) {
        let encoded = reply.encode().expect("a decoded reply fits the size limit");
        assert_eq!(encoded, data, "decode then encode must give the input back");
    }
});
