//! A create from a process whose hard open-files limit is below the
//! sandbox's. The test lowers this process's hard limit for good, so it has
//! a binary of its own.

use soulbox_core::{CommandSpec, Error, Sandbox};
use soulbox_tests::*;

/// CAP_SYS_RESOURCE's bit, from <linux/capability.h>.
const CAP_SYS_RESOURCE: u32 = 24;

/// Returns whether this process has CAP_SYS_RESOURCE in its effective set.
fn has_sys_resource() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .expect("CapEff in /proc/self/status");
    let bits = u64::from_str_radix(effective.trim(), 16).expect("CapEff is hexadecimal");
    bits & (1 << CAP_SYS_RESOURCE) != 0
}

/// Without CAP_SYS_RESOURCE, PID 1 cannot raise the open-files limit above
/// the hard limit it inherits, and the error names both fixes. With the
/// capability the create succeeds and the sandbox gets its limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_hard_limit_explained() {
    if !require_root("low_hard_limit_explained") {
        return;
    }
    let limit = libc::rlimit {
        rlim_cur: 1024,
        rlim_max: 1024,
    };
    // SAFETY: setrlimit only reads the rlimit given.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);

    let options = options();
    assert_eq!(options.open_files_limit, 4096, "the default changed");
    let created = Sandbox::create(options).await;
    if has_sys_resource() {
        let sandbox = created.expect("create with CAP_SYS_RESOURCE");
        assert_eq!(stdout(&sh(&sandbox, "ulimit -n").await), "4096\n");
        return;
    }
    let error = match created {
        Err(error) => error,
        Ok(_) => panic!("the create raised the hard limit without CAP_SYS_RESOURCE"),
    };
    assert!(
        matches!(error, Error::Setup { .. }),
        "not a setup error: {error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("RLIMIT_NOFILE 4096"),
        "the message does not name the limit: {message}"
    );
    assert!(
        message.contains("ulimit -Hn"),
        "the message does not say how to raise the hard limit: {message}"
    );
    assert!(
        message.contains("open_files_limit"),
        "the message does not name the option: {message}"
    );

    // A start request sent during the build meets the same failure: the
    // setup's error comes back, not one about the command.
    let command = CommandSpec::new("/bin/true");
    match Sandbox::create_and_start(soulbox_tests::options(), &command).await {
        Err(error) => assert!(
            matches!(error, Error::Setup { .. }) && error.to_string().contains("RLIMIT_NOFILE"),
            "create_and_start did not report the setup's failure: {error:?}"
        ),
        Ok(_) => panic!("create_and_start raised the hard limit without CAP_SYS_RESOURCE"),
    }
}
