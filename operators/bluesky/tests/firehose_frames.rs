//! The firehose decoder on frames made with the same crates (a signed
//! commit with keys generated here) and on frames recorded from the
//! reference PDS (@atproto/dev-env, `tests/fixtures/firehose/`): what
//! decodes, what verifies, and what is refused (bad CBOR, a cut CAR, a
//! swapped block, a wrong or high-S signature, a record outside the signed
//! tree).

mod common;

use common::firehose::{self as fh, Key, Spoil};
use serde_json::json;
use switchboard_bluesky::firehose::car::{Blocks, CarErrorKind};
use switchboard_bluesky::firehose::did::key_of;
use switchboard_bluesky::firehose::frame::{decode, Frame, FrameErrorKind};
use switchboard_bluesky::firehose::verify::{mst_get, PublicKey, SignedCommit, VerifyErrorKind};
use switchboard_bluesky::firehose::{candidates, may_concern};

const ME: &str = common::BOT_DID;
const ALICE: &str = "did:plc:alice";

async fn commit(key: &Key, spoil: Spoil) -> switchboard_bluesky::firehose::frame::Commit {
    let records = vec![
        (
            "app.bsky.feed.post".to_string(),
            "3kpost".to_string(),
            fh::mention(ME, "hi"),
        ),
        (
            "app.bsky.feed.like".to_string(),
            "3klike".to_string(),
            json!({"$type": "app.bsky.feed.like", "createdAt": "2026-06-01T00:00:00.000Z",
                "subject": {"uri": format!("at://{ME}/app.bsky.feed.post/own"), "cid": "bafyreih3pvyhpvmj4xvmgubkwnn4bw4i2jqxcgzvpfwyxb2iaq4k7i3qky"}}),
        ),
        (
            "app.bsky.feed.post".to_string(),
            "3knoise".to_string(),
            json!({"$type": "app.bsky.feed.post", "text": "unrelated", "createdAt": "2026-06-01T00:00:00.000Z"}),
        ),
    ];
    let bytes = fh::commit_frame(7, ALICE, key, &records, spoil).await;
    match decode(&bytes).unwrap() {
        Frame::Commit(c) => c,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_signed_commit_decodes_selects_and_verifies_with_either_curve() {
    for key in [Key::k256(), Key::p256()] {
        let c = commit(&key, Spoil::Nothing).await;
        assert_eq!((c.seq, c.repo.as_str(), c.ops.len()), (7, ALICE, 3));
        assert!(may_concern(ME, &c));
        assert!(!may_concern(ALICE, &c), "one's own commits are skipped");
        let blocks = Blocks::read(&c.blocks).await.unwrap();
        let found = candidates(ME, &c, &blocks).unwrap();
        let reasons: Vec<_> = found.iter().map(|f| (f.reason, f.path.as_str())).collect();
        assert_eq!(
            reasons,
            [
                ("mention", "app.bsky.feed.post/3kpost"),
                ("like", "app.bsky.feed.like/3klike")
            ]
        );
        assert_eq!(found[0].record["text"], "@bot.test hi");
        assert_eq!(found[0].record["facets"][0]["features"][0]["did"], ME);
        assert_eq!(
            found[1].subject.as_deref(),
            Some("at://did:plc:bot/app.bsky.feed.post/own")
        );
        let signed = SignedCommit::read(&blocks, &c.commit, &c.repo).unwrap();
        for f in &found {
            assert_eq!(
                mst_get(&blocks, &signed.data, &f.path).unwrap(),
                Some(f.cid)
            );
        }
        assert_eq!(
            mst_get(&blocks, &signed.data, "app.bsky.feed.post/zzz").unwrap(),
            None
        );
        let public = PublicKey::from_multikey(&key.multikey()).unwrap();
        signed.check(&public).unwrap();
        let other = PublicKey::from_multikey(&Key::p256().multikey()).unwrap();
        assert_eq!(
            signed.check(&other).unwrap_err().kind(),
            VerifyErrorKind::Signature
        );
        assert_eq!(
            SignedCommit::read(&blocks, &c.commit, "did:plc:mallory")
                .unwrap_err()
                .kind(),
            VerifyErrorKind::WrongRepo
        );
    }
}

#[tokio::test]
async fn spoiled_commits_are_refused() {
    let key = Key::k256();
    let public = PublicKey::from_multikey(&key.multikey()).unwrap();

    let c = commit(&key, Spoil::WrongKey).await;
    let blocks = Blocks::read(&c.blocks).await.unwrap();
    let signed = SignedCommit::read(&blocks, &c.commit, &c.repo).unwrap();
    assert_eq!(
        signed.check(&public).unwrap_err().kind(),
        VerifyErrorKind::Signature
    );

    let c = commit(&key, Spoil::TruncatedCar).await;
    assert_eq!(
        Blocks::read(&c.blocks).await.unwrap_err().kind(),
        CarErrorKind::Read
    );

    let c = commit(&key, Spoil::SwappedRecord).await;
    assert_eq!(
        Blocks::read(&c.blocks).await.unwrap_err().kind(),
        CarErrorKind::Hash
    );

    let c = commit(&key, Spoil::NotInTree).await;
    let blocks = Blocks::read(&c.blocks).await.unwrap();
    let signed = SignedCommit::read(&blocks, &c.commit, &c.repo).unwrap();
    signed.check(&public).unwrap();
    let found = candidates(ME, &c, &blocks).unwrap();
    assert_ne!(
        mst_get(&blocks, &signed.data, &found[0].path).unwrap(),
        Some(found[0].cid)
    );

    // A p256 signature with a high S verifies mathematically but ATProto
    // refuses it (one signature, two encodings).
    let key = Key::P256(p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap());
    let c = commit(&key, Spoil::Nothing).await;
    let blocks = Blocks::read(&c.blocks).await.unwrap();
    let mut signed = SignedCommit::read(&blocks, &c.commit, &c.repo).unwrap();
    let public = PublicKey::from_multikey(&key.multikey()).unwrap();
    signed.check(&public).unwrap();
    let low = p256::ecdsa::Signature::from_slice(&signed.sig).unwrap();
    let (r, s) = low.split_scalars();
    let high = p256::ecdsa::Signature::from_scalars(r, -s).unwrap();
    signed.sig = high.to_bytes().to_vec();
    assert_eq!(
        signed.check(&public).unwrap_err().kind(),
        VerifyErrorKind::Signature
    );
}

#[test]
fn bad_frames_are_errors_not_panics() {
    assert_eq!(decode(b"").unwrap_err().kind(), FrameErrorKind::Header);
    assert_eq!(
        decode(&[0xff, 0x00, 0x13]).unwrap_err().kind(),
        FrameErrorKind::Header
    );
    let mut frame = fh::message("#commit", &ipld_core::ipld::Ipld::String("no map".into()));
    assert_eq!(decode(&frame).unwrap_err().kind(), FrameErrorKind::Body);
    frame.truncate(3);
    assert!(decode(&frame).is_err());
    let header_only = fh::encode(&fh::ipld(&json!({"op": 2})));
    assert_eq!(decode(&header_only).unwrap_err().kind(), FrameErrorKind::Op);

    match decode(&fh::error_frame("FutureCursor", "Cursor in the future.")).unwrap() {
        Frame::Error { error, message } => {
            assert_eq!(error, "FutureCursor");
            assert_eq!(message.as_deref(), Some("Cursor in the future."));
        }
        other => panic!("{other:?}"),
    }
    let info = fh::message("#info", &fh::ipld(&json!({"name": "OutdatedCursor"})));
    assert!(matches!(decode(&info).unwrap(), Frame::Info { name, .. } if name == "OutdatedCursor"));
    let identity = decode(&fh::identity_frame(9, ALICE)).unwrap();
    assert_eq!(identity.seq(), Some(9));
    let sync = fh::message("#sync", &fh::ipld(&json!({"seq": 10, "did": ALICE})));
    assert!(matches!(
        decode(&sync).unwrap(),
        Frame::Other { seq: Some(10), .. }
    ));
}

#[test]
fn keys_of_other_types_are_refused() {
    // An Ed25519 did:key multikey (prefix 0xed01), and not base58btc.
    assert!(PublicKey::from_multikey("z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK").is_err());
    assert!(PublicKey::from_multikey("mAQID").is_err());
    assert!(PublicKey::from_multikey("").is_err());
}

/// Frames recorded from @atproto/dev-env's PDS (`E2E_RECORD=<dir> make
/// e2e-bluesky`): account creations (`#identity`, `#account`, `#sync`),
/// alice's mention of the bot, the bot's reply, alice's like of it and
/// her follow; every repository's DID document from its PLC (legacy
/// key form). Real MSTs (prefix-compressed keys), real
/// k256 signatures.
#[tokio::test]
async fn recorded_frames_of_the_reference_pds_decode_and_verify() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/firehose");
    let mut keys = std::collections::HashMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if !path.to_string_lossy().ends_with(".did.json") {
            continue;
        }
        let doc = std::fs::read(&path).unwrap();
        let did = serde_json::from_slice::<serde_json::Value>(&doc).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        keys.insert(did.clone(), key_of(&did, &doc).unwrap());
    }
    let accounts: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("accounts.json")).unwrap()).unwrap();
    let bot = accounts["bot"].as_str().unwrap().to_string();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    files.sort();
    let mut last_seq = 0;
    let mut commits = 0;
    let mut reasons = Vec::new();
    for path in &files {
        let frame = decode(&std::fs::read(path).unwrap()).unwrap();
        if let Some(seq) = frame.seq() {
            assert!(seq > last_seq, "{path:?}");
            last_seq = seq;
        }
        let Frame::Commit(c) = frame else { continue };
        commits += 1;
        let blocks = Blocks::read(&c.blocks).await.unwrap();
        let mut signed = SignedCommit::read(&blocks, &c.commit, &c.repo).unwrap();
        signed.check(&keys[&c.repo]).unwrap();
        for op in c.ops.iter().filter(|op| op.action == "create") {
            assert_eq!(
                mst_get(&blocks, &signed.data, &op.path).unwrap(),
                op.cid,
                "{path:?} {}",
                op.path
            );
        }
        reasons.extend(
            candidates(&bot, &c, &blocks)
                .unwrap()
                .into_iter()
                .map(|f| f.reason),
        );
        signed.sig[10] ^= 1;
        assert!(signed.check(&keys[&c.repo]).is_err());
    }
    assert!(commits >= 4, "{commits} commits in {} frames", files.len());
    for kind in ["mention", "like", "follow"] {
        assert!(reasons.contains(&kind), "{reasons:?}");
    }
}
