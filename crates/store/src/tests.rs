use super::*;

fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("guildhall.redb")).unwrap();
    (dir, store)
}

fn account(name: &str, key: u8) -> AccountRecord {
    AccountRecord {
        username: name.into(),
        user_id: UserId([key; 32]),
        password_hash: "$argon2id$test".into(),
        sealed_secret: vec![key; 8],
        created_ms: 1,
    }
}

fn op(guild: u8, n: u8) -> Write {
    Write::Op {
        guild: OpId([guild; 32]),
        id: OpId([n; 32]),
        bytes: vec![n; 10],
        author: UserId([n % 3; 32]),
        seq: u64::from(n),
        control: n.is_multiple_of(5),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_share_commits_and_every_ack_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("guildhall.redb");
    {
        let store = Store::open(&path).unwrap();
        let mut tasks = Vec::new();
        for n in 0..200u8 {
            let store = store.clone();
            tasks.push(tokio::spawn(
                async move { store.write(vec![op(1, n)]).await },
            ));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
    }
    let store = Store::open(&path).unwrap();
    let ops = guild_ops(&store, 1);
    assert_eq!(ops.len(), 200);
    let mut firsts: Vec<u8> = ops.iter().map(|(_, b)| b[0]).collect();
    firsts.sort();
    assert_eq!(firsts, (0..200).collect::<Vec<u8>>());
    assert_eq!(store.guilds().unwrap(), vec![OpId([1; 32])]);
}

/// Guild `n`'s stored ops, collected.
fn guild_ops(store: &Store, n: u8) -> Vec<(OpId, Vec<u8>)> {
    let mut ops = Vec::new();
    store
        .visit_guild_log(&OpId([n; 32]), 0..u64::MAX, false, |_, id, bytes| {
            ops.push((id, bytes.to_vec()));
            Ok::<(), StoreError>(())
        })
        .unwrap();
    ops
}

#[tokio::test]
async fn duplicate_ops_are_stored_once_and_order_is_kept_per_guild() {
    let (_dir, store) = temp_store();
    store.write(vec![op(1, 10), op(2, 20)]).await.unwrap();
    store.write(vec![op(1, 11), op(1, 10)]).await.unwrap();
    let firsts: Vec<u8> = guild_ops(&store, 1)
        .iter()
        .map(|(id, b)| {
            assert_eq!(id.0[0], b[0]);
            b[0]
        })
        .collect();
    assert_eq!(firsts, vec![10, 11]);
    assert_eq!(guild_ops(&store, 2).len(), 1);
    assert_eq!(store.op(&OpId([20; 32])).unwrap(), Some(vec![20; 10]));
}

#[tokio::test]
async fn a_taken_username_fails_only_its_own_job() {
    let (_dir, store) = temp_store();
    store
        .write(vec![Write::CreateAccount(account("ada", 1))])
        .await
        .unwrap();
    let (a, b) = tokio::join!(
        store.write(vec![Write::CreateAccount(account("ada", 2)), op(1, 1)]),
        store.write(vec![Write::CreateAccount(account("bob", 3))]),
    );
    assert!(matches!(a, Err(StoreError::UsernameTaken)));
    b.unwrap();
    assert_eq!(
        store.account("ada").unwrap().unwrap().user_id,
        UserId([1; 32])
    );
    assert_eq!(
        store.username_of(&UserId([3; 32])).unwrap().as_deref(),
        Some("bob")
    );
    assert!(
        store.op(&OpId([1; 32])).unwrap().is_none(),
        "a failed job writes nothing"
    );
    assert!(matches!(
        store
            .write(vec![Write::UpdateAccount(account("zed", 4))])
            .await,
        Err(StoreError::NoSuchAccount)
    ));
}

#[tokio::test]
async fn tokens_and_nonces() {
    let (_dir, store) = temp_store();
    let record = TokenRecord {
        username: "ada".into(),
        user_id: UserId([1; 32]),
        created_ms: 5,
    };
    store
        .write(vec![
            Write::Token {
                hash: [7; 32],
                record: record.clone(),
            },
            Write::Token {
                hash: [8; 32],
                record: record.clone(),
            },
            Write::Nonce {
                user: UserId([1; 32]),
                nonce: "n1".into(),
                op: OpId([9; 32]),
                at_ms: 1_000,
            },
        ])
        .await
        .unwrap();
    assert_eq!(store.token(&[7; 32]).unwrap(), Some(record));
    assert_eq!(
        store.nonce(&UserId([1; 32]), "n1").unwrap(),
        Some((OpId([9; 32]), 1_000))
    );
    assert_eq!(store.nonce(&UserId([2; 32]), "n1").unwrap(), None);
    let read = |channel: u8, message: u8| Write::ReadState {
        user: UserId([1; 32]),
        channel: OpId([channel; 32]),
        message: OpId([message; 32]),
    };
    store.write(vec![read(3, 4), read(5, 6)]).await.unwrap();
    store.write(vec![read(3, 7)]).await.unwrap();
    assert_eq!(
        store.read_states(&UserId([1; 32])).unwrap(),
        vec![
            (OpId([3; 32]), OpId([7; 32])),
            (OpId([5; 32]), OpId([6; 32]))
        ]
    );
    assert!(store.read_states(&UserId([2; 32])).unwrap().is_empty());
    store
        .write(vec![Write::RevokeToken { hash: [7; 32] }])
        .await
        .unwrap();
    assert!(store.token(&[7; 32]).unwrap().is_none());
    assert!(store.token(&[8; 32]).unwrap().is_some());
    store
        .write(vec![Write::RevokeTokensOf {
            user: UserId([1; 32]),
        }])
        .await
        .unwrap();
    assert!(store.token(&[8; 32]).unwrap().is_none());
}

#[test]
fn a_newer_schema_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("guildhall.redb");
    drop(Store::open(&path).unwrap());
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("schema_version", SCHEMA_VERSION + 1)
            .unwrap();
        txn.commit().unwrap();
    }
    let err = Store::open(&path).err().expect("refused");
    assert!(matches!(err, StoreError::SchemaTooNew { found, .. } if found == SCHEMA_VERSION + 1));
    assert!(err.to_string().contains("newer guildhall"));
}

#[tokio::test]
async fn backfill_progress_is_kept_until_done() {
    let (_dir, store) = temp_store();
    let progress = BackfillProgress {
        before: (77, OpId([5; 32])),
        source: b"/ip4/127.0.0.1/tcp/1".to_vec(),
    };
    let set = |progress| Write::Backfill {
        guild: OpId([1; 32]),
        progress,
    };
    store
        .write(vec![set(Some(progress.clone()))])
        .await
        .unwrap();
    assert_eq!(store.backfills().unwrap(), vec![(OpId([1; 32]), progress)]);
    store.write(vec![set(None)]).await.unwrap();
    assert!(store.backfills().unwrap().is_empty());
}

fn nonce(n: u8, at_ms: u64) -> Write {
    Write::Nonce {
        user: UserId([1; 32]),
        nonce: format!("n{n}"),
        op: OpId([n; 32]),
        at_ms,
    }
}

#[tokio::test]
async fn nonces_expire_oldest_first_and_a_renewed_one_stays() {
    let (_dir, store) = temp_store();
    let ada = UserId([1; 32]);
    store
        .write(vec![nonce(1, 1_000), nonce(2, 2_000), nonce(3, 5_000)])
        .await
        .unwrap();
    // n2 is stored again later (a newer date): its old age row must not take it away.
    store.write(vec![nonce(2, 6_000)]).await.unwrap();
    store
        .write(vec![Write::ExpireNonces { before_ms: 3_000 }])
        .await
        .unwrap();
    assert_eq!(store.nonce(&ada, "n1").unwrap(), None);
    assert_eq!(
        store.nonce(&ada, "n2").unwrap(),
        Some((OpId([2; 32]), 6_000))
    );
    assert_eq!(
        store.nonce(&ada, "n3").unwrap(),
        Some((OpId([3; 32]), 5_000))
    );
    store
        .write(vec![Write::ExpireNonces { before_ms: 7_000 }])
        .await
        .unwrap();
    assert_eq!(store.nonce(&ada, "n2").unwrap(), None);
    assert_eq!(store.nonce(&ada, "n3").unwrap(), None);
}

#[tokio::test]
async fn schema_1_nonces_are_dated_at_upgrade_and_then_expire() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("guildhall.redb");
    let key = [&[1u8; 32][..], b"old"].concat();
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("schema_version", 1)
            .unwrap();
        txn.open_table(NONCES)
            .unwrap()
            .insert(key.as_slice(), [4u8; 32].as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let before = now_ms();
    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    let ada = UserId([1; 32]);
    let (op, dated) = store.nonce(&ada, "old").unwrap().unwrap();
    assert_eq!(op, OpId([4; 32]));
    assert!(dated >= before);
    let expire = |before_ms| store.write(vec![Write::ExpireNonces { before_ms }]);
    expire(before).await.unwrap();
    assert!(store.nonce(&ada, "old").unwrap().is_some());
    expire(now_ms() + 1).await.unwrap();
    assert_eq!(store.nonce(&ada, "old").unwrap(), None);
}

#[tokio::test]
async fn dms_go_to_each_local_inbox_once_and_the_outbox_drains() {
    let (_dir, store) = temp_store();
    let (ada, bea) = (UserId([1; 32]), UserId([2; 32]));
    let dm = |n: u8| Write::Dm {
        id: [n; 32],
        bytes: vec![n; 40],
        local_members: vec![ada, bea],
    };
    store.write(vec![dm(7)]).await.unwrap();
    store.write(vec![dm(8)]).await.unwrap();
    assert!(matches!(
        store.write(vec![dm(7)]).await,
        Err(StoreError::DuplicateDm)
    ));
    let entry = |position, n| InboxEntry {
        position,
        id: [n; 32],
        envelope: vec![n; 40],
    };
    let inbox = store.dm_inbox(&bea, 0, 10).unwrap();
    assert_eq!(inbox, vec![entry(1, 7), entry(2, 8)]);
    assert_eq!(store.dm_inbox(&ada, 1, 10).unwrap(), vec![entry(2, 8)]);
    assert_eq!(store.dm(&[8; 32]).unwrap(), Some(vec![8; 40]));
    assert_eq!(store.dm_position(&ada, &[8; 32]).unwrap(), Some(2));
    assert_eq!(store.dm_position(&UserId([3; 32]), &[8; 32]).unwrap(), None);

    let cal = UserId([3; 32]);
    store
        .write(vec![Write::DmOutbox {
            id: [7; 32],
            member: cal,
            home: b"addr".to_vec(),
        }])
        .await
        .unwrap();
    let pending = store.dm_outbox().unwrap();
    assert_eq!(
        pending,
        vec![PendingDm {
            id: [7; 32],
            member: cal,
            home: b"addr".to_vec()
        }]
    );
    store
        .write(vec![Write::DmHandedOver {
            id: [7; 32],
            member: cal,
        }])
        .await
        .unwrap();
    assert!(store.dm_outbox().unwrap().is_empty());
}

#[tokio::test]
async fn dm_key_versions_keep_their_first_record() {
    let (_dir, store) = temp_store();
    let ada = UserId([1; 32]);
    let key = |version, byte| Write::DmKey {
        user: ada,
        version,
        bytes: vec![byte; 4],
    };
    store
        .write(vec![key(2, 2), key(1, 1), key(1, 9)])
        .await
        .unwrap();
    assert_eq!(store.dm_keys(&ada).unwrap(), vec![vec![1; 4], vec![2; 4]]);
    assert!(store.dm_keys(&UserId([2; 32])).unwrap().is_empty());
}

#[tokio::test]
async fn a_restart_finds_guild_state_ops_and_log_heads_without_a_scan() {
    let (_dir, store) = temp_store();
    // op(1, n): author n % 3, seq n, a guild-state op when n % 5 == 0; arrival number n.
    store
        .write((0..20).map(|n| op(1, n)).collect())
        .await
        .unwrap();
    let guild = OpId([1; 32]);
    assert_eq!(store.guild_log_len(&guild).unwrap(), 20);
    let anchors: Vec<u64> = store
        .guild_log_anchors(&guild)
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(anchors, vec![0, 5, 10, 15, 17, 18, 19]);
    let mut newest_first = Vec::new();
    store
        .visit_guild_log(&guild, 15..18, true, |position, id, _| {
            newest_first.push((position, id.0[0]));
            Ok::<(), StoreError>(())
        })
        .unwrap();
    assert_eq!(newest_first, vec![(17, 17), (16, 16), (15, 15)]);
}

#[tokio::test]
async fn a_schema_2_database_gets_its_logs_indexed_at_upgrade() {
    use guildhall_proto::body::Body;
    use guildhall_proto::hlc::Hlc;
    use guildhall_proto::id::Keypair;
    use guildhall_proto::op::Envelope;

    let key = Keypair::from_secret([9; 32]);
    let genesis = Envelope {
        guild: OpId([0; 32]),
        author: key.user_id(),
        seq: 1,
        prev: None,
        hlc: Hlc::from_parts(1_000, 0),
        deps: vec![],
        body: Body::Genesis { name: "old".into() },
    }
    .sign_verified(&key)
    .unwrap();
    let guild = genesis.id();
    let message = Envelope {
        guild,
        author: key.user_id(),
        seq: 2,
        prev: Some(guild),
        hlc: Hlc::from_parts(2_000, 0),
        deps: vec![guild],
        body: Body::MessageCreate {
            channel: guild,
            content: "hi".into(),
            reply_to: None,
        },
    }
    .sign_verified(&key)
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("guildhall.redb");
    {
        let store = Store::open(&path).unwrap();
        let writes = vec![Write::op(guild, &genesis), Write::op(guild, &message)];
        store.write(writes).await.unwrap();
    }
    // What a schema-2 node left: the same logs without the restart indexes.
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("schema_version", 2)
            .unwrap();
        txn.delete_table(GUILD_CONTROL).unwrap();
        txn.delete_table(GUILD_HEADS).unwrap();
        txn.commit().unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    let anchors: Vec<u64> = store
        .guild_log_anchors(&guild)
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(
        anchors,
        vec![0, 1],
        "genesis (guild state) and the author's latest op"
    );
}

#[tokio::test]
async fn channel_keys_are_kept_per_guild_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("guildhall.redb");
    let key = |guild: u8, channel: u8, byte: u8| ChannelKey {
        guild: OpId([guild; 32]),
        channel: OpId([channel; 32]),
        key: [byte; 32],
    };
    {
        let store = Store::open(&path).unwrap();
        store
            .write(vec![
                Write::ChannelKey(key(1, 2, 3)),
                Write::ChannelKey(key(1, 2, 4)),
                Write::ChannelKey(key(5, 2, 3)),
            ])
            .await
            .unwrap();
    }
    let store = Store::open(&path).unwrap();
    let mut held = store.channel_keys(&OpId([1; 32])).unwrap();
    held.sort_by_key(|k| k.key);
    assert_eq!(held, vec![key(1, 2, 3), key(1, 2, 4)]);
    assert_eq!(
        store.channel_keys(&OpId([5; 32])).unwrap(),
        vec![key(5, 2, 3)]
    );
    assert!(store.channel_keys(&OpId([9; 32])).unwrap().is_empty());
}
