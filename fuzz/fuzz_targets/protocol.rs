//! The echo protocol's parsers (drivers/echo-protocol) on arbitrary bytes: the IOCTL input, a
//! guest's request and a host's response. Malformed or truncated bytes must give a typed error,
//! never a panic; what parses must borrow no byte beyond the input.
#![no_main]

use echo_protocol::{Request, Response, SetVm};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = SetVm::parse(data);
    let range = data.as_ptr_range();
    let inside = |bytes: &[u8]| {
        bytes.is_empty() || (range.start <= bytes.as_ptr() && bytes.as_ptr_range().end <= range.end)
    };
    match Request::parse(data) {
        Ok(Request::Inline { payload, .. }) => {
            assert!(
                inside(payload),
                "an inline payload reaches past the request"
            );
            assert!(payload.len() <= echo_protocol::MAX_PAYLOAD);
        }
        Ok(Request::Gpadl { length, .. }) => {
            assert!(usize::try_from(length).is_ok_and(|n| n <= echo_protocol::MAX_PAYLOAD));
        }
        Ok(_) | Err(_) => {}
    }
    let _ = Response::parse(data);
});
