//! `amqtt_passwd`: creates and changes the password files of the `auth_file` plugin, with the
//! flags of mosquitto_passwd, writing argon2id hashes as aMQTT 0.12 does.

mod cli;
mod edit;
mod prompt;
mod write;

use std::io;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use clap::Parser;

use amqtt_auth_file::{hash_argon2id, Users};
use cli::Cli;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // Help and version on stdout with status 0; a usage error with status 1, like every
            // other error of this command (clap's own default is 2).
            let _ = error.print();
            return if error.use_stderr() { ExitCode::FAILURE } else { ExitCode::SUCCESS };
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("amqtt_passwd: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let file = &cli.file;
    edit::check_user(&cli.user).map_err(|reason| anyhow!("invalid user name: {reason}"))?;

    let current = if cli.create {
        String::new()
    } else {
        match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                bail!("{} does not exist; use -c to create it", file.display())
            }
            Err(error) => return Err(error).with_context(|| format!("cannot read {}", file.display())),
        }
    };

    let updated = if cli.delete {
        edit::delete_user(&current, &cli.user)
            .ok_or_else(|| anyhow!("user {:?} is not in {}", cli.user, file.display()))?
    } else {
        let password = match cli.password {
            Some(password) => password,
            None => prompt::new_password()?,
        };
        if password.is_empty() {
            bail!("the password is empty");
        }
        let hash = hash_argon2id(password.as_bytes()).map_err(|error| anyhow!("cannot hash the password: {error}"))?;
        edit::set_user(&current, &cli.user, &hash)
    };

    // The other lines are kept as they are; say so if the broker would refuse the file for them.
    if let Err(error) = Users::parse(&updated, file) {
        eprintln!("amqtt_passwd: warning: {error}");
    }
    write::replace_file(file, &updated, cli.create).with_context(|| format!("cannot write {}", file.display()))
}
