//! Tool-rule matching on any pattern and name: never panics, an exact match implies a match
//! in any spelling (what deny rules use), and folding is idempotent.
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
    let once = folded(name).into_owned();
    assert_eq!(folded(&once), once.as_str(), "folding is not idempotent");
    // A name and its folded form are the same name to a deny rule.
    if any {
        assert!(p.matches_any_spelling(&once));
    }
    let _ = mcpgw::policy::spelling::has_forbidden(name);
});
