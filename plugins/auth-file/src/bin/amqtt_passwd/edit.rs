//! Changes to the text of a password file that keep everything else as it was: comments,
//! blank lines, other users' lines (in any format) and their order.

use amqtt_auth_file::Line;

/// Why a user name cannot go into a password file.
pub fn check_user(user: &str) -> Result<(), &'static str> {
    if user.is_empty() {
        Err("the user name is empty")
    } else if user.contains(':') {
        Err("the user name contains `:`, which separates it from the hash")
    } else if user.chars().any(char::is_control) {
        Err("the user name contains a control character")
    } else if user.trim() != user {
        Err("the user name starts or ends with a space, which the broker would not see")
    } else if user.starts_with('#') {
        Err("the user name starts with `#`, which makes the line a comment")
    } else {
        Ok(())
    }
}

/// `text` with `user:hash` in place of `user`'s line (any further lines of that user are
/// removed), or appended when `user` has no line yet.
pub fn set_user(text: &str, user: &str, hash: &str) -> String {
    let mut out = String::with_capacity(text.len() + user.len() + hash.len() + 2);
    let mut replaced = false;
    for line in text.split_inclusive('\n') {
        if !is_line_of(line, user) {
            out.push_str(line);
        } else if !replaced {
            replaced = true;
            out.push_str(user);
            out.push(':');
            out.push_str(hash);
            out.push_str(line_ending(line));
        }
    }
    if !replaced {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(user);
        out.push(':');
        out.push_str(hash);
        out.push('\n');
    }
    out
}

/// `text` without `user`'s lines, or `None` when it has none.
pub fn delete_user(text: &str, user: &str) -> Option<String> {
    let kept: String = text.split_inclusive('\n').filter(|line| !is_line_of(line, user)).collect();
    (kept.len() != text.len()).then_some(kept)
}

fn is_line_of(line: &str, user: &str) -> bool {
    matches!(Line::classify(line), Line::Entry { user: line_user, .. } if line_user == user)
}

fn line_ending(line: &str) -> &str {
    if line.ends_with("\r\n") {
        "\r\n"
    } else if line.ends_with('\n') {
        "\n"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# users\nalice:$2b$old\n\n  bob:$6$x$y  \r\ncarol:$7$z\n";

    #[test]
    fn set_replaces_in_place_and_keeps_the_rest() {
        let out = set_user(FILE, "bob", "$argon2id$new");
        assert_eq!(out, "# users\nalice:$2b$old\n\nbob:$argon2id$new\r\ncarol:$7$z\n");
    }

    #[test]
    fn set_appends_a_new_user() {
        assert_eq!(set_user(FILE, "dave", "$h"), format!("{FILE}dave:$h\n"));
        assert_eq!(set_user("alice:$a", "dave", "$h"), "alice:$a\ndave:$h\n");
        assert_eq!(set_user("", "dave", "$h"), "dave:$h\n");
    }

    #[test]
    fn set_removes_duplicate_lines_of_the_user() {
        assert_eq!(set_user("a:1\nb:2\na:3\n", "a", "$h"), "a:$h\nb:2\n");
    }

    #[test]
    fn a_commented_out_user_is_not_the_user() {
        assert_eq!(set_user("#alice:$x\n", "alice", "$h"), "#alice:$x\nalice:$h\n");
        assert_eq!(delete_user("#alice:$x\n", "alice"), None);
    }

    #[test]
    fn delete_removes_every_line_of_the_user() {
        assert_eq!(delete_user(FILE, "bob").unwrap(), "# users\nalice:$2b$old\n\ncarol:$7$z\n");
        assert_eq!(delete_user("a:1\nb:2\na:3", "a").unwrap(), "b:2\n");
        assert_eq!(delete_user(FILE, "dave"), None);
        assert_eq!(delete_user(FILE, "alic"), None, "a prefix of a user is another user");
    }

    #[test]
    fn user_names_that_would_not_read_back_are_refused() {
        assert!(check_user("alice").is_ok());
        assert!(check_user("alice smith").is_ok());
        for user in ["", "a:b", "a\nb", " alice", "alice ", "#alice", "a\tb"] {
            assert!(check_user(user).is_err(), "{user:?}");
        }
    }
}
