//! The `session` fuzz target's model on the stable toolchain, so `cargo test` plays it on every
//! change (the coverage-guided runs need nightly; see docs/FUZZING.md): a few hundred random op
//! sequences (connects of every kind, publishes and subscriptions with wildcards and `$SYS`,
//! acknowledgements with random ids, takeovers, raw frames, garbage) against one broker over
//! real TCP. After each, every open connection must answer PINGREQ or be closed by the broker,
//! the broker must send nothing malformed, and no broker thread may panic (that aborts the test
//! binary). At the end a normal client still gets a round trip.

use amqtt_tests::session_ops::{self, Driver, Op};
use amqtt_tests::*;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};

#[test]
fn random_op_sequences_leave_the_broker_answering() {
    session_ops::abort_on_broker_panic();
    let broker = session_ops::start_broker();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let mut runner = TestRunner::new(ProptestConfig { cases: 300, failure_persistence: None, ..Default::default() });

    let answered = std::cell::Cell::new(0);
    let result = runner.run(&vec(any::<u8>(), 0..200), |bytes| {
        let ops = Op::parse_all(&bytes);
        let mut driver = Driver::new(addr(&broker));
        match runtime.block_on(driver.run(&ops)) {
            Ok(outcome) => {
                answered.set(answered.get() + outcome.answered);
                Ok(())
            }
            Err(failure) => Err(TestCaseError::fail(format!("{failure}\nops: {ops:#?}"))),
        }
    });
    if let Err(error) = result {
        panic!("{error}");
    }
    // Not every sequence closed everything: the pings were really answered.
    assert!(answered.get() > 0);

    runtime.block_on(async {
        let (mut sub, mut publisher) = subscriber_and_publisher(addr(&broker), &[("after/#", QoS::AtLeastOnce)]).await;
        round_trip(&mut publisher, &mut sub, "after/fuzz", b"still routing").await;
    });
    broker.stop();
}

/// The model itself: every input parses, and the ops named in the fuzzing docs come out of it.
#[test]
fn any_bytes_are_an_op_list() {
    assert!(Op::parse_all(&[]).is_empty());
    let ops = Op::parse_all(&[
        0x7f, 0x00, 0x44, 0x3c, // connection op: CONNECT "c0", clean, keep-alive 60
        0x7f, 0x01, 0x00, // connection op: takeover, clean
        0x00, 0x00, 0x00, 0x01, 0x02, // QoS 0 PUBLISH to "a/b", 2 bytes
        0x80, 0x00, 0x00, 0x00, 0x00, // the same in slot 1, to "a", empty
        0x7f, 0x07, 0x01, 0x02, 0xff, 0xfe, // connection op: garbage on the open connection
    ]);
    assert!(matches!(ops[0], Op::Connect { slot: 0, .. }), "{ops:?}");
    assert!(matches!(ops[1], Op::Takeover { slot: 0, clean_session: true }), "{ops:?}");
    assert!(matches!(&ops[2], Op::Send { slot: 0, packet: Packet::Publish(p) } if p.topic == "a/b"), "{ops:?}");
    assert!(matches!(&ops[3], Op::Send { slot: 1, packet: Packet::Publish(p) } if p.topic == "a"), "{ops:?}");
    assert_eq!(ops[4], Op::Garbage { slot: 0, bytes: vec![0xff, 0xfe], bare: false });
    assert_eq!(ops.len(), 5);
    // Long inputs are cut at 64 ops.
    assert_eq!(Op::parse_all(&[0x70; 1000]).len(), 64);
}
