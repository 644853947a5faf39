//! The profile (`HOOKRELAY_FAULTS=quick|long`) and the results table: each test keeps
//! one [`Row`] (fault, expected, observed, result), prints it and appends it to
//! `target/faults-report.md`, also when the test panics half-way.

use std::cell::RefCell;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Mutex, Once};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// `cargo test`: bounded, a few minutes on 2 cores.
    Quick,
    /// By hand: more cycles, longer outages, a 10-minute soak.
    Long,
}

/// The profile named by `HOOKRELAY_FAULTS` (default `quick`).
pub fn profile() -> Profile {
    match std::env::var("HOOKRELAY_FAULTS").as_deref() {
        Err(_) | Ok("") | Ok("quick") => Profile::Quick,
        Ok("long") => Profile::Long,
        Ok(other) => panic!("HOOKRELAY_FAULTS={other:?}: expected quick or long"),
    }
}

/// `quick` or `long`, per profile.
pub fn pick<T>(quick: T, long: T) -> T {
    match profile() {
        Profile::Quick => quick,
        Profile::Long => long,
    }
}

/// `target/faults-report.md`.
pub fn report_path() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent()
        .map(|target| target.join("faults-report.md"))
        .unwrap_or(tmp)
}

static REPORT_FILE: Mutex<bool> = Mutex::new(false);
static PANIC_HOOK: Once = Once::new();

thread_local! {
    /// The message of the last panic on this thread, for a row cut short by it.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn install_panic_hook() {
    PANIC_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".to_owned());
            LAST_PANIC.with(|last| *last.borrow_mut() = Some(message));
            previous(info);
        }));
    });
}

/// One line of the table. Checks pile up so one run reports everything that went
/// wrong; [`Row::finish`] records the row and fails the test if a check failed.
pub struct Row {
    fault: String,
    expected: String,
    observed: Vec<String>,
    failed: Vec<String>,
    skipped: Option<String>,
    recorded: bool,
}

impl Row {
    pub fn new(fault: &str, expected: &str) -> Self {
        install_panic_hook();
        Self {
            fault: format!("{fault} [{}]", format!("{:?}", profile()).to_lowercase()),
            expected: expected.to_owned(),
            observed: Vec::new(),
            failed: Vec::new(),
            skipped: None,
            recorded: false,
        }
    }

    /// Adds what was seen, in the order seen.
    pub fn observe(&mut self, text: impl Into<String>) {
        let text = text.into();
        println!("  observed: {text}");
        self.observed.push(text);
    }

    /// Checks one expectation; a failure is listed in the row and fails the test at the end.
    pub fn check(&mut self, ok: bool, what: impl Into<String>) -> bool {
        let what = what.into();
        if !ok {
            println!("  FAILED: {what}");
            self.failed.push(what);
        }
        ok
    }

    /// The fault cannot be injected here (no root, no tool): a notice, and the test passes.
    pub fn skip(mut self, why: &str) {
        println!("SKIPPED {}: {why}", self.fault);
        self.skipped = Some(why.to_owned());
        self.record();
    }

    /// Records the row and fails the test if any check failed.
    pub fn finish(mut self) {
        self.record();
        let failed = std::mem::take(&mut self.failed);
        assert!(
            failed.is_empty(),
            "{}: {} expectation(s) not met:\n- {}\nobserved: {}",
            self.fault,
            failed.len(),
            failed.join("\n- "),
            self.observed.join("; ")
        );
    }

    fn result(&self) -> String {
        match (&self.skipped, self.failed.is_empty()) {
            (Some(_), _) => "SKIP".to_owned(),
            (None, true) => "pass".to_owned(),
            (None, false) => format!("**FAIL**: {}", self.failed.join("; ")),
        }
    }

    fn record(&mut self) {
        if self.recorded {
            return;
        }
        self.recorded = true;
        let mut observed = self.observed.join("; ");
        if let Some(why) = &self.skipped {
            observed = format!("skipped: {why}");
        }
        let line = format!(
            "| {} | {} | {} | {} |\n",
            cell(&self.fault),
            cell(&self.expected),
            cell(&observed),
            cell(&self.result())
        );
        println!("\nFAULT ROW {line}");
        let path = report_path();
        let mut created = REPORT_FILE.lock().unwrap_or_else(|e| e.into_inner());
        let mut options = OpenOptions::new();
        if *created {
            options.append(true);
        } else {
            options.write(true).create(true).truncate(true);
        }
        match options.open(&path) {
            Ok(mut file) => {
                if !*created {
                    let _ = write!(
                        file,
                        "| fault | expected | observed | result |\n| --- | --- | --- | --- |\n"
                    );
                    *created = true;
                }
                let _ = file.write_all(line.as_bytes());
            }
            Err(error) => println!("cannot write {}: {error}", path.display()),
        }
        println!("(all rows of this run: {})", path.display());
    }
}

impl Drop for Row {
    /// A test that panicked before `finish` still gets its row, with the panic message.
    fn drop(&mut self) {
        if self.recorded || !std::thread::panicking() {
            return;
        }
        let message = LAST_PANIC
            .with(|last| last.borrow_mut().take())
            .unwrap_or_else(|| "panicked".to_owned());
        let first_line = message
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(300)
            .collect::<String>();
        self.failed.push(format!("aborted: {first_line}"));
        self.record();
    }
}

/// Text fit for one cell of a Markdown table.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}
