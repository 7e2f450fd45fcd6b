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

    /// Glob match of the name as written: `?` is one character. What allow rules use.
    pub fn matches(&self, name: &str) -> bool {
        if name.is_ascii() {
            glob(self.0.as_bytes(), name.as_bytes(), b'*', b'?')
        } else {
            let p: Vec<char> = self.0.chars().collect();
            let n: Vec<char> = name.chars().collect();
            glob(&p, &n, '*', '?')
        }
    }

    /// Whether the pattern matches the name as written or its folded spelling
    /// ([`super::spelling::folded`], the pattern folded the same way). What deny rules use,
    /// so a variant an upstream would normalize into a denied name is denied too.
    pub fn matches_any_spelling(&self, name: &str) -> bool {
        self.matches(name)
            || Pattern::new(&super::spelling::folded(self.0))
                .matches(&super::spelling::folded(name))
    }
}

/// Glob match, iterative with one backtrack point: linear enough for 128-character patterns
/// and immune to the exponential cases of naive recursion.
fn glob<T: Copy + PartialEq>(p: &[T], n: &[T], star: T, any: T) -> bool {
    let (mut pi, mut ni) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while ni < n.len() {
        // The wildcard test comes first: a `*` in the name is no reason to take the
        // pattern's `*` literally (it used to be, and `*` then failed to match `*x`).
        if pi < p.len() && p[pi] == star {
            backtrack = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && (p[pi] == any || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = backtrack {
            pi = sp + 1;
            ni = sn + 1;
            backtrack = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == star)
}

#[cfg(test)]
mod tests {
    use super::super::model::ToolRule;
    use super::*;
    use proptest::prelude::*;

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

    #[test]
    fn wildcards_in_names_are_plain_characters() {
        let m = |p: &str, n: &str| Pattern::new(p).matches(n);
        // A `*` in the name once made the pattern's `*` match it literally, and no more.
        assert!(m("*", "*x"));
        assert!(m("delete_*", "delete_*x"));
        assert!(m("a*", "a*b"));
        assert!(!m("a?", "a"));
        // `?` is one character, not one byte.
        assert!(m("delete_?", "delete_é"));
        assert!(m("?", "ｄ"));
        assert!(!m("??", "ｄ"));
    }

    #[test]
    fn deny_spelling_matches_variants_and_allow_does_not() {
        let deny = |p: &str, n: &str| Pattern::new(p).matches_any_spelling(n);
        for n in [
            "delete_repo",
            "Delete_Repo",
            "delete_repo ",
            "ｄｅｌｅｔｅ_ｒｅｐｏ",
        ] {
            assert!(deny("delete_repo", n), "{n:?}");
            assert!(deny("delete_*", n), "{n:?}");
            assert!(deny("DELETE_*", n), "a pattern is folded too: {n:?}");
        }
        assert!(!Pattern::new("delete_repo").matches("Delete_Repo"));
        assert!(!deny("delete_*", "undelete_repo"));
        assert!(!deny("delete_repo", "delete_repos"));
    }

    /// The reference: plain recursion over characters (exponential, so small inputs only).
    fn reference(p: &[char], n: &[char]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some(('*', rest)) => (0..=n.len()).any(|i| reference(rest, &n[i..])),
            Some((&c, rest)) => n
                .split_first()
                .is_some_and(|(&d, tail)| (c == '?' || c == d) && reference(rest, tail)),
        }
    }

    /// A name, then changes an upstream that normalizes names would undo.
    #[derive(Debug, Clone)]
    enum Change {
        /// Insert an invisible character (whitespace, zero-width, control, format) here.
        Insert(usize, char),
        /// Change this character's case.
        Upper(usize),
        /// Replace this ASCII character by its full-width form (U+FF01..U+FF5E).
        FullWidth(usize),
    }

    fn invisible() -> impl Strategy<Value = char> {
        prop::sample::select(vec![
            ' ',
            '\t',
            '\n',
            '\r',
            '\u{0}',
            '\u{1b}',
            '\u{7f}',
            '\u{85}',
            '\u{a0}',
            '\u{ad}',
            '\u{180e}',
            '\u{2000}',
            '\u{2009}',
            '\u{200b}',
            '\u{200c}',
            '\u{200d}',
            '\u{200e}',
            '\u{2028}',
            '\u{202e}',
            '\u{2060}',
            '\u{2066}',
            '\u{3000}',
            '\u{3164}',
            '\u{fe0f}',
            '\u{feff}',
            '\u{e0041}',
        ])
    }

    fn change() -> impl Strategy<Value = Change> {
        prop_oneof![
            (any::<usize>(), invisible()).prop_map(|(i, c)| Change::Insert(i, c)),
            any::<usize>().prop_map(Change::Upper),
            any::<usize>().prop_map(Change::FullWidth),
        ]
    }

    fn apply(name: &str, changes: &[Change]) -> String {
        let mut chars: Vec<char> = name.chars().collect();
        for c in changes {
            match *c {
                Change::Insert(i, x) => chars.insert(i % (chars.len() + 1), x),
                Change::Upper(i) if !chars.is_empty() => {
                    let i = i % chars.len();
                    chars[i] = chars[i].to_ascii_uppercase();
                }
                Change::FullWidth(i) if !chars.is_empty() => {
                    let i = i % chars.len();
                    if ('!'..='~').contains(&chars[i]) {
                        chars[i] = char::from_u32(chars[i] as u32 - 0x21 + 0xff01).unwrap();
                    }
                }
                Change::Upper(_) | Change::FullWidth(_) => {}
            }
        }
        chars.into_iter().collect()
    }

    proptest! {
        #[test]
        fn matching_never_panics(p in any::<String>(), n in any::<String>()) {
            let pattern = Pattern::new(&p);
            let _ = (pattern.matches(&n), pattern.matches_any_spelling(&n), pattern.is_exact());
            let _ = Pattern::validate(&p);
        }

        #[test]
        fn glob_agrees_with_the_reference(p in "[ab*?é]{0,8}", n in "[ab*?é]{0,10}") {
            let (pc, nc): (Vec<char>, Vec<char>) = (p.chars().collect(), n.chars().collect());
            prop_assert_eq!(Pattern::new(&p).matches(&n), reference(&pc, &nc));
        }

        /// A denied name stays denied however it is respelled, by an exact rule and a
        /// pattern alike.
        #[test]
        fn a_denied_name_stays_denied_when_respelled(
            suffix in "[a-z0-9_.-]{1,12}",
            changes in prop::collection::vec(change(), 0..6),
        ) {
            let name = format!("delete_{suffix}");
            let variant = apply(&name, &changes);
            let deny = |p: &str| ToolRule::Deny(vec![p.to_owned()]);
            prop_assert!(!deny(&name).permits(&variant), "{:?}", variant);
            prop_assert!(!deny("delete_*").permits(&variant), "{:?}", variant);
        }

        /// Respelling never makes another name match: folding only undoes the changes above.
        #[test]
        fn plain_names_are_not_caught_by_other_rules(name in "[a-z0-9_.-]{1,16}") {
            prop_assume!(!name.starts_with("delete_"));
            prop_assert!(ToolRule::Deny(vec!["delete_*".into()]).permits(&name));
        }

        /// Allow rules stay exact: a respelled name is not a listed one.
        #[test]
        fn allow_matching_is_exact(
            name in "[a-z0-9_.-]{1,12}",
            changes in prop::collection::vec(change(), 1..4),
        ) {
            let variant = apply(&name, &changes);
            prop_assume!(variant != name);
            prop_assert!(!ToolRule::Allow(vec![name.clone()]).permits(&variant), "{:?}", variant);
        }
    }
}
