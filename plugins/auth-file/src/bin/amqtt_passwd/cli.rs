//! The command line, as mosquitto_passwd's: `[-c] [-b] FILE USER [PASSWORD]` or `-D FILE USER`.

use std::path::PathBuf;

#[derive(Debug, clap::Parser)]
#[command(
    name = "amqtt_passwd",
    version,
    about = "Manage password files for the auth_file plugin of the amqtt broker",
    long_about = "Manage password files for the auth_file plugin of the amqtt broker \
                  (`password-file` in the auth section).\n\n\
                  Each line of the file is `user:hash`. Passwords are hashed with argon2id \
                  (m=65536, t=3, p=4), as aMQTT 0.12 does. Existing lines in other formats \
                  (sha512-crypt, bcrypt, mosquitto $7$) and comments are kept as they are.",
    override_usage = "amqtt_passwd [-c] [-b] FILE USER [PASSWORD]\n       amqtt_passwd -D FILE USER",
    after_help = "Without -b the password is asked twice on the terminal, without echo.\n\
                  Exit status: 0 on success, 1 on any error."
)]
pub struct Cli {
    /// Create a new password file holding only USER. If FILE exists, it is overwritten.
    /// Without -c, FILE must exist and USER is added to it, or its password replaced.
    #[arg(short = 'c', conflicts_with = "delete")]
    pub create: bool,

    /// Batch mode: take the password from the command line (PASSWORD) instead of asking for
    /// it. Convenient for scripts, but the password is then visible to other users of the
    /// machine (in the process list) and in the shell's history.
    #[arg(short = 'b', requires = "password", conflicts_with = "delete")]
    pub batch: bool,

    /// Delete USER from FILE. It is an error if USER is not in FILE.
    #[arg(short = 'D')]
    pub delete: bool,

    /// The password file to create or change. It is replaced atomically (written to a
    /// temporary file, then renamed), and created readable by its owner only (mode 0600).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// The user name: not empty, without `:` or control characters, without surrounding
    /// spaces, and not starting with `#`.
    #[arg(value_name = "USER")]
    pub user: String,

    /// The password (only with -b).
    #[arg(value_name = "PASSWORD", requires = "batch")]
    pub password: Option<String>,
}
