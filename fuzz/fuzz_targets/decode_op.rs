//! Op decoding on arbitrary bytes: it never panics; whatever decodes re-encodes to exactly the
//! same bytes, and its envelope re-encodes to the same unsigned bytes (one value, one
//! encoding: otherwise one envelope would have several op ids); verifying never panics.

#![no_main]

use guildhall_proto::Op;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(op) = Op::decode(data) else {
        return;
    };
    assert_eq!(op.encode(), data, "decode then encode changed the bytes");
    assert_eq!(
        op.envelope().encode_unsigned(),
        op.unsigned_bytes(),
        "the envelope's canonical encoding differs from the bytes it was decoded from"
    );
    let _ = op.verify();
});
