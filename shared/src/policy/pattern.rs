//! Tool-name patterns in rules: exact names, or `*` (any run of characters, also none) and
//! `?` (exactly one character). Nothing else is special, so a name with a `.` or `-` in it
//! matches only itself: no regular-expression surprises (Kong-style silent mismatches).

/// A borrowed pattern.
#[derive(Debug, Clone, Copy)]
pub struct Pattern<'a>(&'a str);

impl<'a> Pattern<'a> {
    pub fn new(p: &'a str) -> Self {
        Self(p)
    }

    /// Whether the pattern has no wildcard (it names one tool, which can be checked to exist).
    pub fn is_exact(&self) -> bool {
        !self.0.contains(['*', '?'])
    }

    /// What a saved pattern must look like: the tool-name charset plus the two wildcards.
    pub fn validate(p: &str) -> Result<(), String> {
        let ok = !p.is_empty()
            && p.len() <= 128
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-./:*?".contains(&b));
        if ok {
            Ok(())
        } else {
            Err("patterns are 1 to 128 of A-Z a-z 0-9 _ - . / : and the wildcards * and ?".into())
        }
    }

    /// Glob match over bytes (names are ASCII), iterative with one backtrack point: linear
    /// enough for 128-byte patterns and immune to the exponential cases of naive recursion.
    pub fn matches(&self, name: &str) -> bool {
        let (p, n) = (self.0.as_bytes(), name.as_bytes());
        let (mut pi, mut ni) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while ni < n.len() {
            if pi < p.len() && (p[pi] == b'?' || p[pi] == n[ni]) {
                pi += 1;
                ni += 1;
            } else if pi < p.len() && p[pi] == b'*' {
                star = Some((pi, ni));
                pi += 1;
            } else if let Some((sp, sn)) = star {
                pi = sp + 1;
                ni = sn + 1;
                star = Some((sp, sn + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|&b| b == b'*')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let m = |p: &str, n: &str| Pattern::new(p).matches(n);
        assert!(m("echo", "echo"));
        assert!(!m("echo", "echo2"));
        assert!(!m("echo", "ech"));
        assert!(m("get-*", "get-sum"));
        assert!(m("get-*", "get-"));
        assert!(!m("get-*", "get"));
        assert!(m("*", ""));
        assert!(m("*_file", "read_file"));
        assert!(!m("*_file", "read_files"));
        assert!(m("a*b*c", "aXbYbZc"));
        assert!(!m("a*b*c", "aXbYbZ"));
        assert!(m("t?ol", "tool"));
        assert!(!m("t?ol", "tl"));
        assert!(m("a.b", "a.b"), "a dot is a dot");
        assert!(!m("a.b", "axb"));
        assert!(!m(&"*a".repeat(20), &"a".repeat(19)));
        assert!(!Pattern::new("get-*").is_exact() && Pattern::new("x").is_exact());
        assert!(Pattern::validate("get-*").is_ok());
        for bad in ["", "a b", "a[0]", "x|y", &"a".repeat(129)] {
            assert!(Pattern::validate(bad).is_err(), "{bad}");
        }
    }
}
