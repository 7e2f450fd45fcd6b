//! How tool names are compared when a rule *denies*: by their folded spelling, so that a
//! name an upstream would normalize into a denied one is denied too.
//!
//! Some MCP servers look tools up loosely (lowercase, Unicode-normalize, trim). For them
//! `Delete_Repo`, `delete_repo ` (trailing space), `delete\u{200b}_repo` (zero-width space)
//! and `ｄｅｌｅｔｅ_ｒｅｐｏ` (full-width) all run `delete_repo`; a deny rule that compared
//! bytes only would let every one of them through. [`folded`] maps a name to the one
//! spelling those variants share:
//!
//! 1. NFKD (compatibility decomposition): full-width and mathematical letters, ligatures
//!    (`ﬁ`), circled and superscript letters, the Kelvin sign and no-break spaces become their
//!    plain counterparts, and accented letters split into letter + combining mark;
//! 2. characters nobody sees are removed: whitespace, control characters (Cc), format
//!    characters (Cf: zero-width space and joiners, bidi controls, soft hyphen, BOM), the
//!    other default-ignorable code points (Hangul fillers, variation selectors) and
//!    combining marks (so `délete` folds like `delete`);
//! 3. case folding: a character whose uppercase is ASCII folds to the lowercase of that
//!    (`ß` -> `ss`, dotless `ı` -> `i`, `ſ` -> `s`), any other to its lowercase; this covers
//!    what full Unicode case folding does for every character that can end up ASCII, plus
//!    the characters an upper-then-lower normalizer maps there;
//! 4. steps 1 and 2 again, since lowercasing can produce decomposable characters (`İ` ->
//!    `i` + combining dot).
//!
//! Deny patterns are ASCII (`Pattern::validate`), so the fold of a pattern is its
//! lowercase. Folding never makes a rule permit more: a deny rule matches the raw name *or*
//! its folded spelling; allow rules stay exact (a rule that admits must not admit spellings
//! the admin never wrote). Look-alikes from other scripts (Cyrillic `е` for Latin `e`) are
//! not folded: no normalizer maps them, so the upstream would not run the denied tool.
//!
//! Unicode data comes from ICU4X (`icu_normalizer`, `icu_properties`), which the `url`
//! crate already links for host names: no second copy of the tables, one Unicode version.

use std::borrow::Cow;

use icu_normalizer::DecomposingNormalizerBorrowed;
use icu_properties::props::{DefaultIgnorableCodePoint, GeneralCategory, GeneralCategoryGroup};
use icu_properties::{CodePointMapData, CodePointSetData};

/// Whether `c` may not appear in a tool name at all: a control (Cc) or format (Cf)
/// character. They are invisible or reorder text (bidi overrides), no legitimate tool name
/// needs one, and an upstream may drop them before looking the name up.
pub fn is_forbidden(c: char) -> bool {
    c.is_control() || CodePointMapData::<GeneralCategory>::new().get(c) == GeneralCategory::Format
}

/// Whether `name` holds a character [`is_forbidden`] refuses.
pub fn has_forbidden(name: &str) -> bool {
    // Printable ASCII has none: the common case costs one pass over the bytes.
    !name.bytes().all(|b| (0x20..0x7f).contains(&b)) && name.chars().any(is_forbidden)
}

/// Characters removed before names are compared: nothing a reader sees.
fn is_invisible(c: char) -> bool {
    c.is_whitespace()
        || c.is_control()
        || CodePointSetData::new::<DefaultIgnorableCodePoint>().contains(c)
        || {
            let gc = CodePointMapData::<GeneralCategory>::new().get(c);
            gc == GeneralCategory::Format || GeneralCategoryGroup::Mark.contains(gc)
        }
}

/// NFKD, then the invisible characters dropped.
fn decompose_visible(s: &str) -> String {
    DecomposingNormalizerBorrowed::new_nfkd()
        .normalize(s)
        .chars()
        .filter(|c| !is_invisible(*c))
        .collect()
}

/// Appends the case fold of `c` (step 3 of the module doc).
fn push_folded(c: char, out: &mut String) {
    if c.is_ascii() {
        out.push(c.to_ascii_lowercase());
        return;
    }
    let upper: String = c.to_uppercase().collect();
    if upper.is_ascii() {
        out.push_str(&upper.to_ascii_lowercase());
        return;
    }
    // The lowercase may itself uppercase to ASCII (capital sharp s `ẞ` -> `ß` -> `SS`).
    for lower in c.to_lowercase() {
        let upper: String = lower.to_uppercase().collect();
        if upper.is_ascii() {
            out.push_str(&upper.to_ascii_lowercase());
        } else {
            out.push(lower);
        }
    }
}

/// One pass of steps 1 to 4.
fn fold_once(name: &str) -> String {
    let visible = decompose_visible(name);
    let mut cased = String::with_capacity(visible.len());
    visible.chars().for_each(|c| push_folded(c, &mut cased));
    decompose_visible(&cased)
}

/// Passes after which folding stops even if a (pathological) name still changes: Unicode's
/// case and compatibility mappings settle in two.
const MAX_PASSES: usize = 4;

/// The spelling deny rules compare: see the module doc. Idempotent (passes repeat until
/// nothing changes); equal for every variant the module doc lists.
pub fn folded(name: &str) -> Cow<'_, str> {
    // Printable ASCII without spaces (every well-formed tool name): only case can differ.
    if name.bytes().all(|b| b.is_ascii_graphic()) {
        return if name.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(name.to_ascii_lowercase())
        } else {
            Cow::Borrowed(name)
        };
    }
    let mut current = fold_once(name);
    for _ in 1..MAX_PASSES {
        let next = fold_once(&current);
        if next == current {
            break;
        }
        current = next;
    }
    Cow::Owned(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn folding_is_idempotent_and_total(s in any::<String>()) {
            let once = folded(&s).into_owned();
            prop_assert_eq!(folded(&once), once.as_str());
            prop_assert!(!once.chars().any(|c| c.is_whitespace() || is_forbidden(c)));
            let _ = has_forbidden(&s);
        }
    }

    #[test]
    fn variants_of_one_name_fold_alike() {
        for variant in [
            "delete_repo",
            "Delete_Repo",
            "DELETE_REPO",
            "delete_repo ",
            " delete_repo",
            "\tdelete_repo\n",
            "delete _repo",
            "delete\u{a0}_repo",      // no-break space
            "delete\u{3000}_repo",    // ideographic space
            "delete\u{200b}_repo",    // zero-width space
            "delete\u{200d}_repo",    // zero-width joiner
            "\u{feff}delete_repo",    // byte order mark
            "delete\u{ad}_repo",      // soft hyphen
            "delete_repo\u{202e}",    // right-to-left override
            "delete\u{2060}_repo",    // word joiner
            "delete\u{3164}_repo",    // Hangul filler
            "delete_repo\u{fe0f}",    // variation selector
            "delete\u{0}_repo",       // NUL
            "delete\u{1b}_repo",      // ESC
            "delete\u{85}_repo",      // NEL (C1 control)
            "ｄｅｌｅｔｅ_ｒｅｐｏ",  // full-width
            "ＤＥＬＥＴＥ＿ＲＥＰＯ", // full-width, low line included
            "𝐝𝐞𝐥𝐞𝐭𝐞_𝐫𝐞𝐩𝐨",            // mathematical bold
            "ⓓⓔⓛⓔⓣⓔ_ⓡⓔⓟⓞ",            // circled
            "de\u{301}lete_repo",     // combining acute accent
            "délete_repo",            // precomposed é
        ] {
            assert_eq!(folded(variant), "delete_repo", "{variant:?}");
        }
        assert_eq!(folded("strasse"), folded("Straße"));
        assert_eq!(folded("wrıte_file"), "write_file", "dotless i");
        assert_eq!(folded("wrİte_file"), "write_file", "dotted capital I");
        assert_eq!(folded("ſet"), "set", "long s");
        assert_eq!(folded("\u{212a}ill"), "kill", "Kelvin sign");
        assert_eq!(folded("ﬁle"), "file", "ligature");
    }

    #[test]
    fn other_names_stay_apart() {
        // Cyrillic е is a different letter to every normalizer: not folded onto Latin e.
        assert_ne!(folded("d\u{435}lete_repo"), "delete_repo");
        assert_ne!(folded("delete-repo"), "delete_repo");
        assert_eq!(folded("get-sum"), "get-sum");
        assert!(matches!(folded("echo"), Cow::Borrowed(_)));
    }

    #[test]
    fn forbidden_characters() {
        for bad in [
            "a\u{0}b",
            "a\u{7f}",
            "\u{85}x",
            "a\u{200b}b",
            "x\u{202e}",
            "\u{feff}x",
        ] {
            assert!(has_forbidden(bad), "{bad:?}");
        }
        for good in [
            "echo",
            "get-sum",
            "delete repo",
            "résumé",
            "ｄｅｌｅｔｅ",
            "👍",
        ] {
            assert!(!has_forbidden(good), "{good:?}");
        }
    }
}
