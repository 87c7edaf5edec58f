//! `GET /flash` and `POST /flash` on a real `imagegen serve`: refused without
//! `--allow-flash` (also an apply that asks to flash), a dry run unless `"force": true`, and
//! with it a job that writes exactly the artifact to a real loop device, followed over
//! server-sent events and listed by `GET /flash`. Skips loudly without loop devices.

use imagegen::exec::Event;
use imagegen::ops::{FlashListing, FlashOutcome};
use imagegen::plan::{ActionKind, Plan};
use imagegen::state::FlashStatus;
use serde_json::{Value, json};

use crate::flash::LoopDevice;
use crate::flash_records::{gunzip, rpi_fleet};
use crate::serve_support::{Served, read_json};

const MIB: usize = 1024 * 1024;

fn status_and_json(response: reqwest::blocking::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, read_json(response))
}

#[test]
fn flashing_is_refused_without_allow_flash() {
    let fleet = rpi_fleet("/dev/disk/by-id/usb-imagegen-test-card-not-inserted");
    let server = Served::start(&fleet, &[], &[]);
    for body in [
        json!({"artifact": "lab.rpi4.sd:factory", "device": "/dev/null"}),
        json!({"artifact": "lab.rpi4.sd:factory", "device": "/dev/null", "force": true}),
    ] {
        let (status, answer) = status_and_json(server.post_json("/flash", body));
        assert_eq!(status, 403, "{answer}");
        assert_eq!(answer["error"]["code"], "permission_error");
        assert!(
            answer["error"]["help"]
                .as_str()
                .is_some_and(|help| help.contains("--allow-flash")),
            "{answer}"
        );
    }
    // An apply that asks to write devices is refused the same way, before any job starts.
    let (status, answer) =
        status_and_json(server.post_json("/apply", json!({"allow_flash": {"all": true}})));
    assert_eq!(
        (status, &answer["error"]["code"]),
        (403, &json!("permission_error"))
    );
    let (status, jobs) = status_and_json(server.get("/jobs"));
    assert_eq!((status, jobs), (200, json!([])));
    // Reading the records needs no permission.
    let (status, listing) = status_and_json(server.get("/flash"));
    assert_eq!(status, 200);
    let listing: FlashListing = serde_json::from_value(listing).expect("a listing");
    assert!(listing.flashes.is_empty() && listing.devices.is_empty());
}

#[test]
fn post_flash_is_a_dry_run_unless_forced_and_then_a_job_that_writes() {
    let Some(device) = LoopDevice::create("server_flash", 8 * MIB, false) else {
        return;
    };
    let fleet = rpi_fleet(device.path());
    fleet.run(&["apply"]).success();
    let server = Served::start(&fleet, &["--allow-flash"], &[]);

    let request = json!({"artifact": "lab.rpi4.sd:factory", "device": device.path()});
    let (status, answer) = status_and_json(server.post_json("/flash", request.clone()));
    assert_eq!(status, 200, "{answer}");
    let dry: FlashOutcome = serde_json::from_value(answer).expect("a flash outcome");
    assert!(dry.report.dry_run && dry.record.is_none());
    assert_eq!(dry.fleet_device.as_deref(), Some("lab-sd-1"));
    assert_eq!(dry.report.plan.device.node, device.node);
    assert!(!dry.report.plan.steps.is_empty());
    assert!(
        device.contents().iter().all(|byte| *byte == 0),
        "a dry run writes nothing"
    );
    let (_, listing) = status_and_json(server.get("/flash"));
    assert_eq!(listing["flashes"], json!([]), "and records nothing");

    // Invalid input is refused before anything.
    let (status, answer) = status_and_json(server.post_json(
        "/flash",
        json!({"artifact": "lab.rpi4.sd:factory", "device": device.path(), "verify": "most"}),
    ));
    assert_eq!(
        (status, &answer["error"]["code"]),
        (422, &json!("validation"))
    );

    let mut forced = request.clone();
    forced["force"] = json!(true);
    let (status, job) = status_and_json(server.post_json("/flash", forced));
    assert_eq!(status, 202, "{job}");
    assert_eq!(job["kind"], "flash");
    let id = job["id"].as_str().expect("job id");
    let lines = server.job_events(id);
    let (last, events) = lines.split_last().expect("events");
    let events: Vec<Event> = events
        .iter()
        .map(|line| serde_json::from_str(line).expect("a run event"))
        .collect();
    assert!(events.iter().any(|event| matches!(
        event,
        Event::StepProgress {
            transfer: Some(_),
            ..
        }
    )));
    assert!(matches!(
        events.last(),
        Some(Event::RunFinished { succeeded: 1, .. })
    ));
    let summary: Value = serde_json::from_str(last).expect("summary");
    assert_eq!(summary["event"], "summary");
    let view = server.wait_job(id);
    assert_eq!(view["status"], "succeeded", "{view}");
    let outcome: FlashOutcome =
        serde_json::from_value(view["result"].clone()).expect("the job's flash outcome");
    let record = outcome.record.expect("recorded");
    assert_eq!(record.status, FlashStatus::Succeeded);
    assert_eq!(record.device_id.as_deref(), Some("lab-sd-1"));
    let data = gunzip(&std::fs::read(&outcome.source.path).expect("blob"));
    assert_eq!(&device.contents()[..data.len()], &data[..]);

    let (status, listing) = status_and_json(server.get("/flash?device=lab-sd-1"));
    assert_eq!(status, 200);
    let listing: FlashListing = serde_json::from_value(listing).expect("a listing");
    assert_eq!(listing.flashes.len(), 1);
    assert_eq!(listing.flashes[0].record.id, record.id);
    assert!(listing.flashes[0].completed);
    assert_eq!(listing.devices[0].key, "fleet:lab/lab-sd-1");
    let (_, other) = status_and_json(server.get("/flash?device=no-such-device"));
    assert_eq!(other["flashes"], json!([]));

    // The fleet sees its device up to date.
    let plan: Plan = read_json(server.post_json("/plan", json!({})));
    let action = plan.action("flash.lab-sd-1").expect("flash action");
    assert_eq!(action.action, ActionKind::NoOp, "{:?}", action.reasons);
}
