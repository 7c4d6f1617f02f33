//! Asks for a new password on the terminal, twice and without echo, as mosquitto_passwd does.

use std::io::IsTerminal;

use anyhow::{bail, Context};

pub fn new_password() -> anyhow::Result<String> {
    if !std::io::stdin().is_terminal() {
        bail!("standard input is not a terminal, so the password cannot be asked for; give it with -b: amqtt_passwd -b FILE USER PASSWORD");
    }
    let password = rpassword::prompt_password("Password: ").context("cannot read the password from the terminal")?;
    let again =
        rpassword::prompt_password("Reenter password: ").context("cannot read the password from the terminal")?;
    if password != again {
        bail!("the passwords do not match");
    }
    Ok(password)
}
