//! The op-count scan of metadata changes on arbitrary bytes: it never panics; what it accepts
//! claims at most the budget, and when Automerge parses it too, Automerge decodes exactly the
//! number of ops the scan counted, without panicking. A change of the shape a node authorizes
//! (`spec/ops.md` §7: scalar puts and deletes of root map keys) then applies to a metadata
//! document, or is refused, without panicking. Automerge only ever sees bytes the scan accepted,
//! as in `meta.rs`: anything else could be a change that expands to billions of ops.

#![no_main]

use automerge::legacy::{Key, ObjectId, OpType};
use guildhall_proto::OpId;
use guildhall_proto::change_scan::claimed_ops;
use guildhall_proto::limits::MAX_META_CHANGE_OPS;
use guildhall_proto::meta::MetaDoc;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(claimed) = claimed_ops(data, MAX_META_CHANGE_OPS) else {
        return;
    };
    assert!(
        claimed <= MAX_META_CHANGE_OPS,
        "the scan accepted {claimed} ops"
    );
    let Ok(change) = automerge::Change::from_bytes(data.to_vec()) else {
        return;
    };
    let ops = change.decode().operations;
    assert_eq!(
        ops.len() as u64,
        claimed,
        "Automerge decodes another number of ops"
    );
    // A node applies only what it authorized, and authorization refuses any other shape.
    let authorizable = ops.iter().all(|op| {
        matches!(
            (&op.obj, &op.key, op.insert),
            (ObjectId::Root, Key::Map(_), false)
        ) && matches!(op.action, OpType::Put(_) | OpType::Delete)
    });
    if authorizable {
        let _ = MetaDoc::new().apply(OpId::default(), data);
    }
});
