//! Progress on the simulator's long steps — starting the nodes, generating and importing
//! datasets, each scenario step (the first HE query generates the TFHE key set) — drawn with
//! indicatif on stderr when it is a terminal. `--progress` asks for it anyway: where stderr is
//! not a terminal it gets one plain line per finished task instead of bars. Hidden by default,
//! so the tests, a piped stdout and the reports never see it.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where progress goes.
#[derive(Clone, Default)]
pub struct Progress(Mode);

#[derive(Clone, Default)]
enum Mode {
    /// Nowhere (tests, the library's default).
    #[default]
    Hidden,
    /// Bars and spinners on the terminal.
    Bars(MultiProgress),
    /// One line on stderr per finished task (`--progress` without a terminal).
    Lines,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Mode::Hidden => "Progress(hidden)",
            Mode::Bars(_) => "Progress(bars)",
            Mode::Lines => "Progress(lines)",
        })
    }
}

impl Progress {
    /// No progress at all.
    pub fn hidden() -> Self {
        Progress(Mode::Hidden)
    }

    /// Progress on stderr: bars if it is a terminal; else plain lines if `forced`, else none.
    pub fn stderr(forced: bool) -> Self {
        if std::io::stderr().is_terminal() {
            Progress(Mode::Bars(MultiProgress::with_draw_target(
                ProgressDrawTarget::stderr(),
            )))
        } else if forced {
            Progress(Mode::Lines)
        } else {
            Self::hidden()
        }
    }

    /// A task of `len` parts (`what`: what it does, shown before the bar).
    pub fn bar(&self, len: u64, what: &str) -> Task {
        let style =
            ProgressStyle::with_template("{prefix:.bold} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
        self.task(ProgressBar::new(len), style, what)
    }

    /// A task of unknown length: a spinner with the time it has taken so far.
    pub fn spinner(&self, what: &str) -> Task {
        let style = ProgressStyle::with_template("{spinner} {prefix:.bold} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let task = self.task(ProgressBar::new_spinner(), style, what);
        task.bar.enable_steady_tick(Duration::from_millis(120));
        task
    }

    fn task(&self, bar: ProgressBar, style: ProgressStyle, what: &str) -> Task {
        let bar = match &self.0 {
            Mode::Bars(multi) => multi.add(bar.with_style(style).with_prefix(what.to_string())),
            Mode::Hidden | Mode::Lines => ProgressBar::hidden(),
        };
        Task {
            bar,
            lines: matches!(self.0, Mode::Lines),
            what: what.to_string(),
            started: Instant::now(),
        }
    }
}

/// One task's bar or spinner; [`Task::finish`] leaves its last line on the terminal.
pub struct Task {
    bar: ProgressBar,
    lines: bool,
    what: String,
    started: Instant,
}

impl Task {
    /// One more part done.
    pub fn inc(&self) {
        self.bar.inc(1);
    }

    /// What it is doing now.
    pub fn say(&self, msg: impl Into<String>) {
        self.bar.set_message(msg.into());
    }

    /// Done, with a last word (`"2000 rows"`, `"completed"`).
    pub fn finish(self, outcome: &str) {
        if self.lines {
            eprintln!(
                "{}: {outcome} ({:.1} s)",
                self.what,
                self.started.elapsed().as_secs_f64()
            );
        }
        self.bar.finish_with_message(outcome.to_string());
    }
}
