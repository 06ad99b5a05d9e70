//! A guided run for a newcomer: a Spot instance gets its two-minute warning, and the real function binary, under the
//! Lambda runtime loop and against a local AWS (moto), takes it out of every target group and walls off its ENIs.
//! It prints what AWS looks like before and after, the function's answer, and the SNS notification.
//!
//! Run it with `scripts/demo`, which installs the tools and builds the binary first. Exits non-zero if the cleanup
//! did not succeed.

#[path = "../tests/it/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use common::Moto;
use common::fleet::{Fleet, Node};
use common::runtime::{LambdaRuntime, function_env};
use serde::Serialize;
use serde_json::Value;
use spot_cleanup::Summary;
use spot_cleanup::tags::ORIGINAL_GROUPS_TAG;

/// Lines are kept to this many columns where JSON allows.
const WIDTH: usize = 112;
const EVENT: &str = "spot-interruption-terminate.json";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match demo().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(problem) => {
            println!("\nFAILED: {problem}");
            ExitCode::FAILURE
        }
    }
}

async fn demo() -> Result<(), String> {
    let binary = function_binary();
    println!("Starting a local AWS (moto) and building a small fleet on it ...");
    let moto = Moto::start();
    let fleet = Fleet::build(&moto.sdk_config().await, 2).await;
    let names = Names::of(&fleet);
    let node = &fleet.spot[0];
    println!("  moto          {}", moto.endpoint);
    println!(
        "  fleet         in {}: 2 Spot instances (spot-0, spot-1) and an on-demand neighbour, each with a\n\
         \x20               primary ENI and a pod ENI, behind {} target groups; one more group in another VPC",
        fleet.vpc_id,
        fleet.target_groups.len()
    );
    println!(
        "  groups        app = {}, quarantine = {}\n\
         \x20               (quarantine-other = {} is the other VPC's)",
        fleet.app_group, fleet.quarantine_group, fleet.other_vpc_quarantine_group
    );
    println!("  interrupted   spot-0 = {}\n", node.id);

    heading("BEFORE");
    show_state(&fleet, &names, node).await;

    heading("RUN  the real binary under the Lambda runtime loop");
    let event = common::event_for(EVENT, &node.id);
    let payload = std::env::temp_dir().join(format!("spot-cleanup-demo-{}.json", std::process::id()));
    std::fs::write(&payload, serde_json::to_string_pretty(&event).unwrap())
        .map_err(|e| format!("writing {}: {e}", payload.display()))?;
    let runtime = LambdaRuntime::start(&binary, &function_env(&moto, &fleet, false));
    let port = runtime.port();
    println!("  $ cargo lambda watch --only-lambda-apis --invoke-port {port}    # the Lambda Runtime API");
    println!(
        "  $ {}    # polls it, as in Lambda, with AWS_LAMBDA_RUNTIME_API=127.0.0.1:{port}/.rt,\n\
         \x20     AWS_ENDPOINT_URL=<moto>, SNS_TOPIC_ARN=<topic>, QUARANTINE_SECURITY_GROUP_ID=<both quarantine groups>",
        relative(&binary)
    );
    println!(
        "  $ cargo lambda invoke --invoke-port {port} --data-file {}",
        payload.display()
    );
    println!("  the payload: events/{EVENT}, its instance id swapped for spot-0's and its time set to now:");
    print_json(&event, 4);
    let clock = std::time::Instant::now();
    let answer = runtime.invoke_file(&payload);
    let wall = clock.elapsed();
    let _ = std::fs::remove_file(&payload);
    println!(
        "  invoke to answer: {} ms wall (cargo lambda invoke's own start-up included)",
        wall.as_millis()
    );
    println!();

    heading("ANSWER  the function's return value");
    let summary = match answer {
        Ok(answer) => {
            let summary: Result<Summary, _> = serde_json::from_value(answer.clone());
            match summary {
                Ok(summary) => {
                    print_json(&summary, 2);
                    Some(summary)
                }
                Err(_) => {
                    print_json(&answer, 2);
                    None
                }
            }
        }
        Err(stderr) => {
            println!("{}", indent(&stderr, 2));
            None
        }
    };
    println!();

    heading("AFTER");
    show_state(&fleet, &names, node).await;

    heading("SNS  the notification, as the SQS subscription received it");
    let published = fleet.published().await;
    for note in &published {
        show_notification(note, summary.as_ref());
    }
    if published.is_empty() {
        println!("  (nothing was published)");
    }
    println!();

    let verdict = check(&fleet, node, summary.as_ref(), published.len()).await;
    if verdict.is_err() {
        println!(
            "The function's log ({}):\n{}",
            runtime.function_log_path().display(),
            indent(&runtime.function_log(), 2)
        );
    }
    verdict?;
    println!(
        "OK: spot-0 left every target group in its VPC, its ENIs are on the quarantine group, and one summary was \
         published."
    );
    Ok(())
}

/// The function binary built next to this example (target/debug/spot-cleanup), or `SPOT_CLEANUP_BINARY` to run
/// another build (the release one, say) through the same demo.
fn function_binary() -> PathBuf {
    if let Some(binary) = std::env::var_os("SPOT_CLEANUP_BINARY") {
        return PathBuf::from(binary);
    }
    let exe = std::env::current_exe().expect("the demo's own path");
    let binary = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("spot-cleanup"))
        .expect("target/<profile>/examples/demo");
    assert!(
        binary.exists(),
        "{} is missing: run scripts/demo, which builds it",
        binary.display()
    );
    binary
}

/// Who each target id, address and security group belongs to, for the tables.
struct Names(BTreeMap<String, String>);

impl Names {
    fn of(fleet: &Fleet) -> Names {
        let mut names = BTreeMap::new();
        let nodes = fleet
            .spot
            .iter()
            .enumerate()
            .map(|(n, node)| (format!("spot-{n}"), node))
            .chain([("neighbour".to_owned(), &fleet.neighbour)]);
        for (name, node) in nodes {
            names.insert(node.id.clone(), name.clone());
            names.insert(node.primary_ip.clone(), format!("{name} primary IP"));
            for ip in &node.pod_ips {
                names.insert(ip.clone(), format!("{name} pod IP"));
            }
        }
        names.insert(fleet.app_group.clone(), "app".into());
        names.insert(fleet.quarantine_group.clone(), "quarantine".into());
        names.insert(fleet.other_vpc_quarantine_group.clone(), "quarantine-other".into());
        Names(names)
    }

    fn get(&self, id: &str) -> &str {
        self.0.get(id).map_or("?", String::as_str)
    }

    /// "quarantine, app"
    fn groups<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> String {
        let named: Vec<&str> = ids.into_iter().map(|id| self.get(id)).collect();
        if named.is_empty() { "-".into() } else { named.join(", ") }
    }
}

async fn show_state(fleet: &Fleet, names: &Names, node: &Node) {
    let all = fleet.registrations().await;
    let ours = fleet.registrations_of(node, &all);
    let mut rows = Vec::new();
    let mut previous = "";
    for registration in &all {
        let (group, id, port) = registration;
        let note = if ours.contains(registration) {
            "<- interrupted"
        } else if group == "other-vpc-ip" {
            "another VPC: same address, not this instance; stays"
        } else {
            ""
        };
        let shown = if group == previous { "" } else { group.as_str() };
        previous = group;
        rows.push(vec![
            shown.to_owned(),
            id.clone(),
            port.map(|p| p.to_string()).unwrap_or_default(),
            names.get(id).to_owned(),
            note.to_owned(),
        ]);
    }
    for group in fleet.target_groups.keys() {
        if !all.iter().any(|(g, _, _)| g == group) {
            rows.push(vec![group.clone(), "(no targets)".into()]);
        }
    }
    table(&["TARGET GROUP", "TARGET", "PORT", "BELONGS TO", ""], &rows);
    println!();

    let enis = fleet.enis(node).await;
    let mut rows = Vec::new();
    let mut merged = false;
    for (n, eni) in node.enis.iter().enumerate() {
        let (groups, tags) = enis.get(eni).cloned().unwrap_or_default();
        merged |= groups.contains(&fleet.quarantine_group) && groups.len() > 1;
        rows.push(vec![
            eni.clone(),
            if n == 0 { "primary" } else { "pods" }.to_owned(),
            names.groups(groups.iter().map(String::as_str)),
            tags.get(ORIGINAL_GROUPS_TAG).map_or_else(
                || "-".into(),
                |value| format!("{value} ({})", names.groups(value.split(','))),
            ),
        ]);
    }
    let tag = format!("TAG {ORIGINAL_GROUPS_TAG}");
    table(&["ENI OF spot-0", "", "SECURITY GROUPS", &tag], &rows);
    if merged {
        println!(
            "  (moto also lists the instance's launch group on an attached ENI; the function set only quarantine, \
             see groups_after)"
        );
    }
    println!();
}

/// Left-aligned columns, two spaces apart; a row may have fewer cells than the header.
fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("  {}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

fn show_notification(note: &Value, answer: Option<&Summary>) {
    println!("  {:<18} {}", "Subject", note["Subject"].as_str().unwrap_or("?"));
    let attributes = note["MessageAttributes"].as_object().cloned().unwrap_or_default();
    let mut label = "MessageAttributes";
    for (name, attribute) in &attributes {
        println!(
            "  {label:<18} {name:<12} {:<7} {}",
            attribute["Type"].as_str().unwrap_or("?"),
            attribute["Value"].as_str().unwrap_or("?")
        );
        label = "";
    }
    let message = note["Message"].as_str().unwrap_or_default();
    match serde_json::from_str::<Summary>(message) {
        Ok(summary) if Some(&summary) == answer => println!(
            "  {:<18} the Summary JSON ({} bytes), identical to ANSWER above",
            "Message",
            message.len()
        ),
        Ok(summary) => {
            println!("  Message");
            print_json(&summary, 4);
        }
        Err(_) => println!("  {:<18} {message}", "Message"),
    }
}

/// Did the cleanup do what it should? The reason if not.
async fn check(fleet: &Fleet, node: &Node, summary: Option<&Summary>, published: usize) -> Result<(), String> {
    let summary = summary.ok_or("the function did not answer with a summary")?;
    if summary.outcome.as_str() != "cleaned" {
        return Err(format!("the outcome is {}", summary.outcome.as_str()));
    }
    let left = fleet.registrations_of(node, &fleet.registrations().await);
    if !left.is_empty() {
        return Err(format!("spot-0 is still registered: {left:?}"));
    }
    let quarantined = fleet.enis_in_group(node, &fleet.quarantine_group).await;
    if quarantined.len() != node.enis.len() {
        return Err(format!("only {quarantined:?} of {:?} are quarantined", node.enis));
    }
    if published != 1 {
        return Err(format!("{published} notifications were published, not 1"));
    }
    Ok(())
}

fn heading(title: &str) {
    println!("{title}");
    println!("{}", "-".repeat(title.len()));
}

fn relative(path: &Path) -> String {
    path.strip_prefix(common::repo_root())
        .unwrap_or(path)
        .display()
        .to_string()
}

fn indent(text: &str, by: usize) -> String {
    text.lines()
        .map(|line| format!("{:by$}{line}", ""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Pretty JSON in the value's own field order, laid out to use the width (see `Block::render`).
fn print_json(value: &impl Serialize, by: usize) {
    let pretty = serde_json::to_string_pretty(value).expect("JSON");
    let mut lines = pretty.lines().map(str::trim);
    let tree = Block::parse(lines.next().unwrap_or_default(), &mut lines);
    let mut out = Vec::new();
    tree.render(by, false, &mut out);
    println!("{}", out.join("\n"));
}

/// A line of `to_string_pretty` output, or a container with its opening line, contents and closing line. Pretty
/// output puts a container's opener at the end of a line and its closer at the start of one, and no string value can
/// end a line with `{` or `[`, since it ends with a quote.
enum Block {
    Line(String),
    Container {
        open: String,
        items: Vec<Block>,
        close: String,
    },
}

impl Block {
    fn parse<'a>(first: &str, rest: &mut impl Iterator<Item = &'a str>) -> Block {
        if !(first.ends_with('{') || first.ends_with('[')) {
            return Block::Line(first.to_owned());
        }
        let mut items = Vec::new();
        while let Some(line) = rest.next() {
            if line.starts_with('}') || line.starts_with(']') {
                return Block::Container {
                    open: first.to_owned(),
                    items,
                    close: line.to_owned(),
                };
            }
            items.push(Block::parse(line, rest));
        }
        Block::Container {
            open: first.to_owned(),
            items,
            close: String::new(),
        }
    }

    fn flat(&self) -> String {
        match self {
            Block::Line(line) => line.clone(),
            Block::Container { open, items, close } => {
                let items: Vec<String> = items.iter().map(Block::flat).collect();
                format!("{open}{}{close}", items.join(" "))
            }
        }
    }

    /// One line if it fits. Else the container's items one per line; or, inside another container and when each item
    /// is a value or a container that fits on a line, as many to a line as fit, so that a list of records stays short.
    fn render(&self, by: usize, nested: bool, out: &mut Vec<String>) {
        let flat = self.flat();
        let Block::Container { open, items, close } = self else {
            out.push(format!("{:by$}{flat}", ""));
            return;
        };
        if by + flat.len() <= WIDTH {
            out.push(format!("{:by$}{flat}", ""));
            return;
        }
        out.push(format!("{:by$}{open}", ""));
        let inner = by + 2;
        let small = |item: &Block| matches!(item, Block::Line(_)) || inner + item.flat().len() <= WIDTH;
        if nested && items.iter().all(small) {
            let mut line = String::new();
            for item in items.iter().map(Block::flat) {
                if !line.is_empty() && inner + line.len() + 1 + item.len() > WIDTH {
                    out.push(format!("{:inner$}{line}", ""));
                    line.clear();
                }
                if !line.is_empty() {
                    line.push(' ');
                }
                line.push_str(&item);
            }
            out.push(format!("{:inner$}{line}", ""));
        } else {
            for item in items {
                item.render(inner, true, out);
            }
        }
        out.push(format!("{:by$}{close}", ""));
    }
}
