//! Tool-rule matching on any pattern and name: never panics, folding is idempotent, and the
//! property deny rules exist for: whenever a saved pattern denies the name an upstream would
//! normalize a request into (its folded spelling), it denies the request's own spelling too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcpgw::policy::pattern::Pattern;
use mcpgw::policy::spelling::folded;

fuzz_target!(|input: (&str, &str)| {
    let (pattern, name) = input;
    let p = Pattern::new(pattern);
    let exact = p.matches(name);
    let any = p.matches_any_spelling(name);
    assert!(!exact || any, "a name matched as written but not in any spelling");
    let canonical = folded(name).into_owned();
    assert_eq!(folded(&canonical), canonical.as_str(), "folding is not idempotent");
    // Only saved patterns (ASCII names and wildcards) carry the guarantee. (An earlier version
    // of this target asserted the converse, that a raw match implies a match of the folded
    // name; libFuzzer refuted it with `?*` and a lone newline, which folds to nothing.)
    if Pattern::validate(pattern).is_ok() && p.matches_any_spelling(&canonical) {
        assert!(any, "{name:?} normalizes into a denied name but is not denied itself");
    }
    let _ = mcpgw::policy::spelling::has_forbidden(name);
});
