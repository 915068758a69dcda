//! The store's durable commit: one job alone, many concurrent jobs sharing a transaction (group
//! commit), and one job of many ops. Every iteration waits for the fsync.

use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, criterion_group, criterion_main};
use guildhall_proto::id::{OpId, UserId};
use guildhall_store::{Store, Write};

/// About the size of a signed chat message op.
const OP_BYTES: usize = 300;

fn op(guild: OpId, counter: &AtomicU64) -> Write {
    let mut id = [0u8; 32];
    id[..8].copy_from_slice(&counter.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    Write::Op {
        guild,
        id: OpId(id),
        bytes: vec![7; OP_BYTES],
        author: UserId([1; 32]),
        seq: counter.load(Ordering::Relaxed),
        control: false,
    }
}

fn commit(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("bench.redb")).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let guild = OpId([1; 32]);
    let counter = AtomicU64::new(0);
    let mut group = c.benchmark_group("commit");
    group.sample_size(20);

    group.bench_function("one_op", |b| {
        b.iter(|| {
            runtime
                .block_on(store.write(vec![op(guild, &counter)]))
                .unwrap()
        })
    });
    for jobs in [16, 64] {
        group.bench_function(format!("{jobs}_concurrent_jobs_of_one_op"), |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let pending: Vec<_> = (0..jobs)
                        .map(|_| store.enqueue(vec![op(guild, &counter)]).unwrap())
                        .collect();
                    for done in pending {
                        done.await.unwrap();
                    }
                })
            })
        });
    }
    group.bench_function("one_job_of_64_ops", |b| {
        b.iter(|| {
            let writes = (0..64).map(|_| op(guild, &counter)).collect();
            runtime.block_on(store.write(writes)).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, commit);
criterion_main!(benches);
