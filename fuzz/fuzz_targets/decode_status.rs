//! Status records arrive from a supervisor process inside the sandbox; no
//! record may panic the host.
#![no_main]

use libfuzzer_sys::fuzz_target;
use soulbox_proto::{StatusRecord, STATUS_RECORD_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = <[u8; STATUS_RECORD_LEN]>::try_from(data) else { return };
    if let Ok(record) = StatusRecord::decode(&raw) {
        let again = StatusRecord::decode(&record.encode()).expect("an encoded record decodes");
        assert_eq!(again, record, "encode then decode must give the record back");
    }
});
