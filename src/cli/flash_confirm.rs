//! The question `apply` asks on a terminal before a run writes fleet devices: each device
//! to be written is shown (its path, the disk it is now, model, serial, size) and its id
//! must be typed back. `--yes` skips it; without a terminal the `--flash` permission itself
//! is the consent (a script that names the devices to write has said so).

use std::io::{IsTerminal, Write};
use std::sync::atomic::AtomicBool;

use super::flash_observer::read_answer;
use crate::error::{Error, ErrorCode, Result};
use crate::flash::{DeviceCandidate, format_size};
use crate::plan::{Action, Plan, Resource};

/// Asks for every device the plan writes, when there is a terminal to ask on and `--yes`
/// was not given. Any other answer than the device's id stops the run before it starts.
pub(crate) fn confirm_flashes(plan: &Plan, yes: bool, cancel: &AtomicBool) -> Result<()> {
    let writes: Vec<&Action> = plan
        .actions
        .iter()
        .filter(|action| action.resource == Resource::Flash && action.action.is_change())
        .collect();
    let terminal = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    if writes.is_empty() || yes || !terminal {
        return Ok(());
    }
    let disks = crate::ops::devices();
    for action in writes {
        let id = action.device_id.as_deref().unwrap_or_default();
        eprint!("{}", question(action, &disks));
        let _ = std::io::stderr().flush();
        let Some(answer) = read_answer(cancel)? else {
            eprintln!();
            return Err(Error::new(
                ErrorCode::Interrupted,
                "interrupted: nothing was run",
            ));
        };
        if answer.trim() != id {
            return Err(Error::new(
                ErrorCode::FlashNotConfirmed,
                format!("not confirmed: fleet device `{id}` was not written, and nothing was run"),
            )
            .with_help(
                "`imagegen apply --flash DEVICE_ID` writes only the devices named; `--yes` writes without asking",
            ));
        }
    }
    Ok(())
}

/// What will be destroyed, and the question.
fn question(action: &Action, disks: &[DeviceCandidate]) -> String {
    let id = action.device_id.as_deref().unwrap_or_default();
    let path = action.details.get("path").map_or("", String::as_str);
    let image = action.details.get("image").map_or("", String::as_str);
    let mut text = format!("\nFleet device `{id}`: this DESTROYS everything on `{path}`\n");
    let node = std::fs::canonicalize(path).ok();
    match disks
        .iter()
        .find(|disk| Some(&disk.device.node) == node.as_ref())
    {
        Some(disk) => {
            text.push_str(&format!(
                "  now {}: {}\n",
                disk.device.node.display(),
                disk.device.describe()
            ));
            for partition in &disk.device.partitions {
                text.push_str(&format!(
                    "  partition {} ({})\n",
                    partition.name,
                    format_size(partition.size)
                ));
            }
        }
        None => text.push_str("  (not a disk this machine lists now; the flash checks it again)\n"),
    }
    text.push_str(&format!("  and writes its `{image}` image there"));
    if let Some(reason) = action.reasons.first() {
        text.push_str(&format!(", because {}", reason.text));
    }
    text.push_str(&format!(
        ".\nType `{id}` to write it, anything else to stop: "
    ));
    text
}
