//! One outbox row that cannot be read holds back only itself: a claim sets
//! it aside (quarantined, with why) and returns the rest; an operator lists
//! it and, once its cause is fixed, releases it.

mod common;

use std::time::Duration;

use common::ledger_store;
use wallet_core::contract::data::TestData;
use wallet_core::ids::{IdGenerator, WalletId};
use wallet_core::money::Currency;
use wallet_core::ports::{Claim, LedgerStore, Outbox};
use wallet_core_postgres::{outbox_backlog, quarantined, release_quarantined};

#[tokio::test]
async fn an_unreadable_row_is_quarantined_and_the_rest_of_the_claim_goes_out() {
    let store = ledger_store().await;
    let data = TestData::new();
    let system = WalletId::system(Currency::USD);
    let requests: Vec<_> = (0..3)
        .map(|_| data.reserve_request(system, data.wallet_id(), "1.00", Currency::USD))
        .collect();
    let events: Vec<_> = requests.iter().map(|r| data.wallet_reserved(r)).collect();
    assert_eq!(store.post(&events).await.unwrap(), 3);
    // The middle row is damaged: an event type this build does not know.
    let seqs: Vec<i64> = sqlx::query_scalar("SELECT seq FROM outbox ORDER BY seq")
        .fetch_all(store.pool())
        .await
        .unwrap();
    let good = sqlx::query_scalar::<_, String>("SELECT envelope::text FROM outbox WHERE seq = $1")
        .bind(seqs[1])
        .fetch_one(store.pool())
        .await
        .unwrap();
    sqlx::query(
        "UPDATE outbox SET envelope = jsonb_set(envelope, '{event_type}', '\"Bogus\"') WHERE seq = $1",
    )
    .bind(seqs[1])
    .execute(store.pool())
    .await
    .unwrap();

    let claim = Claim::new(data.worker_id(), data.now(), Duration::from_secs(30));
    let claimed = store.claim(&claim, 100).await.expect("the claim succeeds");
    let got: Vec<i64> = claimed.iter().map(|r| r.seq as i64).collect();
    assert_eq!(got, [seqs[0], seqs[2]], "the readable rows go out");
    let aside = quarantined(store.pool()).await.unwrap();
    assert_eq!(aside.len(), 1);
    assert_eq!(aside[0].seq, seqs[1]);
    assert!(aside[0].error.contains("Bogus"), "{:?}", aside[0].error);
    let backlog = outbox_backlog(store.pool()).await.unwrap();
    assert_eq!(
        (backlog.waiting, backlog.quarantined),
        (2, 1),
        "{backlog:?}"
    );

    // Another worker, after the lease: the quarantined row is not claimed.
    let seqs_sent: Vec<u64> = claimed.iter().map(|r| r.seq).collect();
    store.acknowledge(&seqs_sent).await.unwrap();
    let later = Claim::new(data.worker_id(), data.now(), Duration::from_secs(30));
    assert!(store.claim(&later, 100).await.unwrap().is_empty());

    // Fixed and released, it goes out.
    sqlx::query("UPDATE outbox SET envelope = $1::jsonb WHERE seq = $2")
        .bind(good)
        .bind(seqs[1])
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(release_quarantined(store.pool(), None).await.unwrap(), 1);
    let released = store.claim(&later, 100).await.unwrap();
    assert_eq!(
        released.iter().map(|r| r.seq as i64).collect::<Vec<_>>(),
        [seqs[1]]
    );
    assert!(quarantined(store.pool()).await.unwrap().is_empty());
}
