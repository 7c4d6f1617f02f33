//! Arbitrary op sequences (tests/src/session_ops.rs) against one in-process broker over real
//! TCP: after each input every open connection must answer PINGREQ or be closed, within
//! `session_ops::HANG`; the broker must send nothing malformed and no broker thread may panic
//! (that aborts the process). One broker, one runtime and the driver's two connections live
//! for the whole run, so most inputs cost no TCP connect or CONNECT. The same model runs on the
//! stable toolchain in tests/tests/session_fuzz.rs.

#![no_main]

use std::sync::{LazyLock, Mutex};

use amqtt_tests::session_ops::{self, Driver, Op};
use amqtt_tests::RunningBroker;
use libfuzzer_sys::fuzz_target;
use tokio::runtime::Runtime;

struct Harness {
    runtime: Runtime,
    driver: Driver,
    _broker: RunningBroker,
    /// Inputs run, and the connections they opened and saw closed: printed now and then, since
    /// new connections are what an input's cost depends on most.
    inputs: u64,
    connects: u64,
    closed: u64,
}

static HARNESS: LazyLock<Mutex<Harness>> = LazyLock::new(|| {
    // A write to a connection the broker has closed must fail with EPIPE, not kill the
    // process: Rust's own main sets this, libFuzzer's does not.
    // SAFETY: setting a signal's disposition to "ignore" installs no handler code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    session_ops::abort_on_broker_panic();
    let broker = session_ops::start_broker();
    let driver = Driver::new(broker.listeners()[0].addr);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    Mutex::new(Harness { runtime, driver, _broker: broker, inputs: 0, connects: 0, closed: 0 })
});

fuzz_target!(|data: &[u8]| {
    let ops = Op::parse_all(data);
    let mut harness = HARNESS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let harness = &mut *harness;
    match harness.runtime.block_on(harness.driver.run(&ops)) {
        Ok(outcome) => {
            harness.inputs += 1;
            harness.connects += outcome.connects as u64;
            harness.closed += outcome.closed as u64;
            if harness.inputs.is_power_of_two() || harness.inputs % 1_000_000 == 0 {
                let (inputs, connects, closed) = (harness.inputs, harness.connects, harness.closed);
                eprintln!("session: {inputs} inputs, {connects} connections opened, {closed} closed by the broker");
            }
        }
        Err(failure) => panic!("{failure}\nops: {ops:#?}"),
    }
});
