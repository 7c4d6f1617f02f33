//! `amqtt_passwd` run as a user runs it, in a temporary folder; the files it writes are read
//! back with the plugin's own loader.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use amqtt_auth_file::{StoredHash, Users};

/// Python bcrypt 5.0 `hashpw(b"hunter2", gensalt(rounds=4))`.
const BCRYPT_HUNTER2: &str = "$2b$04$qJ1dWmViDt1VJp5ROlv5eeI9B61d.k43GPUCgp6K8BRL.6llZiGha";

fn amqtt_passwd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_amqtt_passwd"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("amqtt_passwd runs")
}

fn succeeds(args: &[&str]) {
    let output = amqtt_passwd(args);
    assert!(output.status.success(), "amqtt_passwd {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// Runs a command that must fail with status 1 and returns its stderr.
fn fails(args: &[&str]) -> String {
    let output = amqtt_passwd(args);
    assert_eq!(output.status.code(), Some(1), "amqtt_passwd {args:?} should fail with status 1");
    String::from_utf8(output.stderr).unwrap()
}

fn hash_of(file: &Path, user: &str) -> std::sync::Arc<StoredHash> {
    let users = Users::load(file).unwrap();
    users.get(user).unwrap_or_else(|| panic!("{user} not in {}", file.display())).clone()
}

fn line_of<'a>(text: &'a str, user: &str) -> &'a str {
    text.lines().find(|line| line.starts_with(&format!("{user}:"))).unwrap()
}

#[test]
fn create_in_batch_mode_writes_an_argon2id_file_the_plugin_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    let path = file.to_str().unwrap();
    succeeds(&["-c", "-b", path, "alice", "s3cret"]);

    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.starts_with("alice:$argon2id$v=19$m=65536,t=3,p=4$"), "{text}");
    let hash = hash_of(&file, "alice");
    assert!(hash.verify(b"s3cret"));
    assert!(!hash.verify(b"s3cret "));
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers, ["passwd"], "no temporary file is left behind");
}

#[test]
fn create_overwrites_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    std::fs::write(&file, format!("bob:{BCRYPT_HUNTER2}\n")).unwrap();
    succeeds(&["-c", "-b", file.to_str().unwrap(), "alice", "s3cret"]);
    let users = Users::load(&file).unwrap();
    assert!(users.get("bob").is_none());
    assert!(users.get("alice").is_some());
}

#[test]
fn update_replaces_the_user_in_place_and_keeps_comments_and_other_users() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    let path = file.to_str().unwrap();
    let before = format!("# managed by hand\nbob:{BCRYPT_HUNTER2}\n\nalice:{BCRYPT_HUNTER2}\ncarol:{BCRYPT_HUNTER2}\n");
    std::fs::write(&file, &before).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();

    succeeds(&["-b", path, "alice", "n3w"]);
    let after = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = after.lines().collect();
    assert_eq!(lines.len(), 5, "{after}");
    assert_eq!(lines[0], "# managed by hand");
    assert_eq!(lines[1], format!("bob:{BCRYPT_HUNTER2}"));
    assert_eq!(lines[2], "");
    assert!(lines[3].starts_with("alice:$argon2id$"), "{after}");
    assert_eq!(lines[4], format!("carol:{BCRYPT_HUNTER2}"));
    assert!(hash_of(&file, "alice").verify(b"n3w"));
    assert!(!hash_of(&file, "alice").verify(b"hunter2"));
    assert!(hash_of(&file, "bob").verify(b"hunter2"));
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o640, "an update keeps the mode");

    succeeds(&["-b", path, "dave", "d4ve"]);
    let added = std::fs::read_to_string(&file).unwrap();
    assert!(added.starts_with(&after), "a new user is appended");
    assert!(hash_of(&file, "dave").verify(b"d4ve"));
    assert_eq!(line_of(&added, "alice"), line_of(&after, "alice"));
}

#[test]
fn delete_removes_only_that_user() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    std::fs::write(&file, format!("# c\nalice:{BCRYPT_HUNTER2}\nbob:{BCRYPT_HUNTER2}\n")).unwrap();
    succeeds(&["-D", file.to_str().unwrap(), "alice"]);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), format!("# c\nbob:{BCRYPT_HUNTER2}\n"));
}

#[test]
fn delete_of_an_absent_user_fails_and_leaves_the_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    let before = format!("bob:{BCRYPT_HUNTER2}\n");
    std::fs::write(&file, &before).unwrap();
    let stderr = fails(&["-D", file.to_str().unwrap(), "alice"]);
    assert!(stderr.contains("\"alice\" is not in"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), before);
}

#[test]
fn without_a_terminal_and_without_b_it_fails_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    let stderr = fails(&["-c", file.to_str().unwrap(), "alice"]);
    assert!(stderr.contains("not a terminal") && stderr.contains("-b"), "{stderr}");
    assert!(!file.exists());
}

#[test]
fn changing_a_missing_file_without_c_fails() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    let stderr = fails(&["-b", file.to_str().unwrap(), "alice", "pw"]);
    assert!(stderr.contains("use -c"), "{stderr}");
    let stderr = fails(&["-D", file.to_str().unwrap(), "alice"]);
    assert!(stderr.contains("does not exist"), "{stderr}");
    assert!(!file.exists());
}

#[test]
fn bad_user_names_and_flag_combinations_fail_with_status_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("passwd");
    let path = path.to_str().unwrap();
    assert!(fails(&["-c", "-b", path, "al:ice", "pw"]).contains("invalid user name"));
    assert!(fails(&["-c", "-b", path, "#alice", "pw"]).contains("invalid user name"));
    assert!(fails(&["-c", "-b", path, "alice", ""]).contains("password is empty"));
    fails(&["-c", "-D", path, "alice"]);
    fails(&["-D", "-b", path, "alice", "pw"]);
    fails(&[path, "alice", "pw"]);
    fails(&["-b", path, "alice"]);
    assert!(!Path::new(path).exists());
}

#[test]
fn help_explains_every_flag() {
    let output = amqtt_passwd(&["--help"]);
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for expected in ["-c", "overwritten", "-b", "command line", "-D", "Delete USER", "argon2id", "0600"] {
        assert!(help.contains(expected), "--help lacks {expected:?}:\n{help}");
    }
}

#[test]
fn a_file_other_lines_make_unusable_is_written_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    std::fs::write(&file, "bob:plain-text\n").unwrap();
    let output = amqtt_passwd(&["-b", file.to_str().unwrap(), "alice", "pw"]);
    assert!(output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("warning") && stderr.contains("line 1"), "{stderr}");
    assert!(!stderr.contains("plain-text"), "{stderr}");
}
