//! Messages between the host and its zygote: no request may panic the
//! zygote and no reply may panic the host.
#![no_main]

use libfuzzer_sys::fuzz_target;
use soulbox_proto::zygote::{ForkReply, ForkRequest};

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = ForkRequest::decode(data) {
        let again = ForkRequest::decode(&request.encode()).expect("an encoded request decodes");
        assert_eq!(again, request, "encode then decode must give the request back");
    }
    if let Ok(reply) = ForkReply::decode(data) {
        let again = ForkReply::decode(&reply.encode()).expect("an encoded reply decodes");
        assert_eq!(again, reply, "encode then decode must give the reply back");
    }
});
