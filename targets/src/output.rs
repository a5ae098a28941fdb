//! What one script run returns, and the buffer that keeps its output small
//! however much the script prints.

/// Output kept per exec unless configured otherwise; more would bloat
/// events and prompts.
pub const DEFAULT_OUTPUT_CAP: usize = 16 * 1024;

/// The result of running one script on a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    /// `None` when the script was killed at its timeout.
    pub exit_code: Option<i32>,
    /// Stdout and stderr interleaved, UTF-8 (lossy), at most the cap in
    /// bytes, ending with a marker line when cut.
    pub output: String,
    pub timed_out: bool,
    /// Whether output was dropped to respect the cap.
    pub truncated: bool,
    /// What the sandbox did to the script, when it did anything: e.g.
    /// `killed: out of memory (limit 512 MiB; 1 process killed)`, `pid
    /// limit reached`, `timed out after 30 s`, then `output cut at 16384
    /// bytes` if it was also cut (DESIGN T1). `None` when it ran untouched
    /// (a long output alone is only `truncated`).
    pub contained: Option<String>,
}

/// Keeps the first `cap` bytes and counts the rest, so a chatty script
/// cannot fill the agent's memory.
#[derive(Debug)]
pub(crate) struct OutputBuffer {
    kept: Vec<u8>,
    cap: usize,
    seen: u64,
}

impl OutputBuffer {
    pub(crate) fn new(cap: usize) -> Self {
        OutputBuffer {
            kept: Vec::with_capacity(cap.min(64 * 1024)),
            cap,
            seen: 0,
        }
    }

    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.seen += bytes.len() as u64;
        let room = self.cap.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&bytes[..room.min(bytes.len())]);
    }

    /// Bytes pushed, kept or not.
    pub(crate) fn seen(&self) -> u64 {
        self.seen
    }

    /// Whether bytes were dropped.
    pub(crate) fn overflowed(&self) -> bool {
        self.seen > self.kept.len() as u64
    }

    /// Removes the first occurrence of `needle`; true if it was there.
    pub(crate) fn strip_first(&mut self, needle: &[u8]) -> bool {
        match self
            .kept
            .windows(needle.len())
            .position(|window| window == needle)
        {
            Some(at) => {
                self.kept.drain(at..at + needle.len());
                self.seen -= needle.len() as u64;
                true
            }
            None => false,
        }
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.kept
    }

    /// The kept output as text of at most `cap` bytes, marker included,
    /// and whether anything was cut.
    pub(crate) fn into_text(self) -> (String, bool) {
        let cap = self.cap;
        self.into_text_capped(cap)
    }

    /// As [`Self::into_text`], within `cap` (at most the buffer's own):
    /// for a buffer that kept a little more, for a sentinel to strip.
    pub(crate) fn into_text_capped(self, cap: usize) -> (String, bool) {
        let seen = self.seen;
        let cap = cap.min(self.cap);
        let overflowed = self.overflowed() || self.kept.len() > cap;
        let mut text = String::from_utf8_lossy(&self.kept).into_owned();
        // Lossy decoding can grow the text (U+FFFD is 3 bytes).
        if !overflowed && text.len() <= cap {
            return (text, false);
        }
        let marker = format!("\n[output truncated: {seen} bytes in all]\n");
        if marker.len() > cap {
            truncate_utf8(&mut text, cap);
            return (text, true);
        }
        truncate_utf8(&mut text, cap - marker.len());
        text.push_str(&marker);
        (text, true)
    }
}

/// Cuts `s` to at most `max` bytes on a char boundary.
fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_output_is_kept_whole() {
        let mut buffer = OutputBuffer::new(16);
        buffer.push(b"hello ");
        buffer.push(b"world");
        assert_eq!(buffer.into_text(), ("hello world".to_string(), false));
    }

    #[test]
    fn large_output_is_cut_with_a_marker_within_the_cap() {
        let mut buffer = OutputBuffer::new(100);
        for _ in 0..1000 {
            buffer.push(b"0123456789");
        }
        let (text, truncated) = buffer.into_text();
        assert!(truncated);
        assert!(text.len() <= 100, "{} bytes", text.len());
        assert!(text.ends_with("[output truncated: 10000 bytes in all]\n"));
        assert!(text.starts_with("0123456789"));
    }

    #[test]
    fn cut_lands_on_a_char_boundary() {
        let mut buffer = OutputBuffer::new(60);
        for _ in 0..100 {
            buffer.push("é".as_bytes());
        }
        let (text, truncated) = buffer.into_text();
        assert!(truncated);
        assert!(text.len() <= 60);
        assert!(text.starts_with('é'));
    }

    #[test]
    fn invalid_utf8_that_grows_past_the_cap_is_cut() {
        let mut buffer = OutputBuffer::new(60);
        buffer.push(&[0xff; 60]);
        let (text, truncated) = buffer.into_text();
        assert!(truncated);
        assert!(text.len() <= 60);
    }

    #[test]
    fn a_sentinel_is_stripped_once() {
        let mut buffer = OutputBuffer::new(100);
        buffer.push(b"warn\nSENTINEL\nout SENTINEL");
        assert!(buffer.strip_first(b"SENTINEL\n"));
        assert_eq!(buffer.into_text().0, "warn\nout SENTINEL");
    }
}
