//! PID 1 decodes every message the host sends; no input may panic it, and
//! whatever decodes must encode back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use soulbox_proto::Request;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = Request::decode(data) {
        let encoded = request.encode().expect("a decoded request fits the size limit");
        assert_eq!(encoded, data, "decode then encode must give the input back");
    }
});
