//! One module per command.

pub mod copy;
pub mod df;
pub mod export;
pub mod fsck;
pub mod gc;
pub mod history;
pub mod images;
pub mod inspect;
pub mod load;
pub mod login;
pub mod pull;
pub mod push;
pub mod rootfs;
pub mod save;
pub mod serve;
pub mod sync;
pub mod tags;
pub mod unpack;
pub mod verify;

use std::io::Write;

/// Print a value as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}
