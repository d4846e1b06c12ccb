//! Who is who: the one rule by which account names are compared, and the checks that keep
//! look-alike account and role names out.
//!
//! Every comparison of identities in rolegate — tokens, candidates, approvers, requests,
//! events and their filters, imports, the directory — goes through [`account_key`] (or
//! [`same_account`], which compares two keys). The key is the account's *NFKC case fold*,
//! Unicode's rule for comparing identifiers without regard to case or compatibility forms
//! (UAX #31 §5, the compatibility caseless match of the Unicode Standard, D146): `Åsa`,
//! `åsa`, `A\u{30A}sa` (decomposed) and `ＡＳＡ`-style fullwidth forms of a name are one account.
//! Names keep the spelling the admin gave, for display.
//!
//! A new name is refused when it holds characters that hide or disguise what it says
//! ([`check_name`]: controls, format characters such as zero-width spaces and bidi
//! overrides, unassigned code points, private use, odd spaces), and a new account when it
//! mixes scripts inside one label or looks like an existing account (its confusable
//! skeleton, Unicode TS #39, equals another's) — unless an admin allows that one name.

use std::borrow::Cow;

use icu_casemap::CaseMapper;
use icu_normalizer::{ComposingNormalizerBorrowed, DecomposingNormalizerBorrowed};
use icu_properties::props::{DefaultIgnorableCodePoint, GeneralCategory};
use icu_properties::{CodePointMapData, CodePointSetData};
use unicode_security::MixedScript as _;

use crate::model::error::{Error, Result};

/// The key an account is known by: its NFKC case fold, trimmed of surrounding white space.
///
/// Two spellings are the same account exactly when their keys are equal. ASCII names take a
/// fast path with the same result (their fold is their lower case).
pub fn account_key(account: &str) -> String {
    let a = account.trim();
    if a.is_ascii() {
        return a.to_ascii_lowercase();
    }
    nfkc_casefold(a)
}

/// Whether two spellings name the same account (see [`account_key`]).
pub fn same_account(a: &str, b: &str) -> bool {
    a == b || account_key(a) == account_key(b)
}

/// The compatibility caseless form of `s` (Unicode D146, composed): fold, decompose with
/// compatibility mappings, fold again (a fold can produce what a decomposition changes), and
/// compose; default-ignorable code points are dropped, as NFKC_Casefold drops them.
fn nfkc_casefold(s: &str) -> String {
    let fold = CaseMapper::new();
    let nfd = DecomposingNormalizerBorrowed::new_nfd();
    let nfkd = DecomposingNormalizerBorrowed::new_nfkd();
    let nfkc = ComposingNormalizerBorrowed::new_nfkc();
    let ignorable = CodePointSetData::new::<DefaultIgnorableCodePoint>();
    let once = fold.fold_string(&nfd.normalize(s)).into_owned();
    let once = nfkd.normalize(&once).into_owned();
    let twice = fold.fold_string(&once).into_owned();
    let kept: String = twice.chars().filter(|c| !ignorable.contains(*c)).collect();
    match nfkc.normalize(&kept) {
        Cow::Borrowed(_) => kept,
        Cow::Owned(s) => s,
    }
}

/// The confusable skeleton of an account (Unicode TS #39) over its key: two accounts whose
/// skeletons are equal look alike (`раypal` with a Cyrillic `р` and `paypal`).
pub fn skeleton(account: &str) -> String {
    unicode_security::skeleton(&account_key(account)).collect()
}

/// What a name names, for [`check_name`]'s messages and limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// A user's account.
    Account,
    /// A role.
    Role,
}

impl NameKind {
    fn what(self) -> &'static str {
        match self {
            NameKind::Account => "account",
            NameKind::Role => "role name",
        }
    }

    /// The longest name of this kind, in characters.
    pub fn max_chars(self) -> usize {
        match self {
            NameKind::Account => 256,
            NameKind::Role => 128,
        }
    }
}

/// Why a character may not stand in a name, if it may not.
fn forbidden(c: char) -> Option<&'static str> {
    if c.is_ascii() {
        return (c.is_ascii_control()).then_some("a control character");
    }
    let gc = CodePointMapData::<GeneralCategory>::new().get(c);
    let why = match gc {
        GeneralCategory::Control => "a control character",
        GeneralCategory::Format => {
            "a format character (invisible, or one that reorders text: zero-width and bidi controls)"
        }
        GeneralCategory::Unassigned => "a code point Unicode has not assigned",
        GeneralCategory::PrivateUse => "a private-use character",
        GeneralCategory::Surrogate => "a surrogate",
        GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator => {
            "a line or paragraph separator"
        }
        GeneralCategory::SpaceSeparator => "a space other than U+0020",
        _ if CodePointSetData::new::<DefaultIgnorableCodePoint>().contains(c) => {
            "a default-ignorable character (rendered invisibly)"
        }
        _ => return None,
    };
    Some(why)
}

/// Whether a character hides or disguises text (a control, a format or bidi character, an
/// unassigned or private-use code point, an odd space): such characters stand in no name.
pub fn hides(c: char) -> bool {
    forbidden(c).is_some()
}

/// Checks that a new name says what it shows: 1 to [`NameKind::max_chars`] characters, no
/// surrounding white space, and none of the characters that hide or reorder text.
pub fn check_name(kind: NameKind, name: &str) -> Result<()> {
    let bad = |message: String| Error::Invalid {
        what: kind.what().into(),
        message,
    };
    let shown = || quoted(name);
    if name.trim().is_empty() {
        return Err(bad("a name must not be empty".into()));
    }
    let n = name.chars().count();
    if n > kind.max_chars() {
        return Err(bad(format!(
            "a {} has at most {} characters, not {n}",
            kind.what(),
            kind.max_chars()
        )));
    }
    if name.trim() != name {
        return Err(bad(format!(
            "{} begins or ends with white space: remove it",
            shown()
        )));
    }
    for (i, c) in name.chars().enumerate() {
        if let Some(why) = forbidden(c) {
            return Err(bad(format!(
                "{} holds U+{:04X} at character {}, {why}: names may hold only visible characters",
                shown(),
                u32::from(c),
                i + 1
            )));
        }
    }
    Ok(())
}

/// The characters that split an account into labels for the mixed-script check: the
/// separators of `DOMAIN\user`, `user@domain`, `a.b` and `first last`.
fn is_label_separator(c: char) -> bool {
    c.is_ascii_punctuation() || c == ' '
}

/// The first label of an account that mixes scripts (Latin with Cyrillic, say), if any.
/// Scripts that write one language together (Han with Kana or Hangul) count as one, and
/// digits and punctuation go with any script (UTS #39's augmented script sets).
pub fn mixed_script_label(account: &str) -> Option<&str> {
    if account.is_ascii() {
        return None;
    }
    account
        .split(is_label_separator)
        .find(|label| !label.is_single_script())
}

/// A name as messages quote it: in backquotes, with anything invisible shown as `\u{..}`.
pub fn quoted(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('`');
    for c in name.chars().take(300) {
        if forbidden(c).is_some() || c == '`' {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    if name.chars().count() > 300 {
        out.push('…');
    }
    out.push('`');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_name_share_a_key() {
        // Case in any script, decomposed forms, compatibility forms.
        for (a, b) in [
            ("CONTOSO\\Åsa", "contoso\\åsa"),
            ("CONTOSO\\Åsa", "CONTOSO\\A\u{30a}sa"),
            ("CONTOSO\\Åsa", "contoso\\\u{212b}sa"), // ANGSTROM SIGN
            ("CONTOSO\\kate", "CONTOSO\\\u{212a}ate"), // KELVIN SIGN
            ("jdoe", "ｊｄｏｅ"),                    // fullwidth
            ("Straße", "STRASSE"),
            ("ΣΑΣ", "σας"),
            ("  CONTOSO\\jdoe ", "contoso\\JDOE"),
            ("ﬁnance", "finance"), // ligature
        ] {
            assert_eq!(account_key(a), account_key(b), "{a} ~ {b}");
            assert!(same_account(a, b));
        }
        assert_eq!(account_key("CONTOSO\\Åsa"), "contoso\\åsa");
        assert!(!same_account("CONTOSO\\Åsa", "CONTOSO\\Asa"));
        assert!(!same_account("jdoe", "jdoe2"));
    }

    #[test]
    fn the_ascii_fast_path_agrees_with_the_full_fold() {
        let all: String = (0x20u8..0x7f).map(char::from).collect();
        assert_eq!(account_key(&all), nfkc_casefold(all.trim()));
    }

    #[test]
    fn hidden_and_disguising_characters_are_refused_by_code_point() {
        for (name, cp) in [
            ("CONTOSO\\j\u{200b}doe", "U+200B"),
            ("admins\u{202e}", "U+202E"),
            ("a\u{0}b", "U+0000"),
            ("a\nb", "U+000A"),
            ("a\u{a0}b", "U+00A0"),
            ("a\u{e000}b", "U+E000"),
            ("a\u{0378}b", "U+0378"), // unassigned
            ("a\u{115f}b", "U+115F"), // default ignorable letter
        ] {
            let e = check_name(NameKind::Role, name).unwrap_err().to_string();
            assert!(e.contains(cp), "{name:?}: {e}");
            assert!(
                !e.contains('\u{202e}'),
                "the message shows no bidi control: {e}"
            );
        }
        for name in [" admins", "admins ", "", "   "] {
            assert!(check_name(NameKind::Role, name).is_err(), "{name:?}");
        }
        let long = "x".repeat(129);
        let e = check_name(NameKind::Role, &long).unwrap_err().to_string();
        assert!(e.contains("at most 128"), "{e}");
        for ok in [
            "CONTOSO\\Åsa",
            "Domain Admins",
            "管理者",
            "Ελένη",
            "o'brien@contoso.com",
        ] {
            check_name(NameKind::Account, ok).unwrap();
        }
    }

    #[test]
    fn look_alikes_share_a_skeleton_and_mixed_labels_are_found() {
        for (real, fake) in [
            ("CONTOSO\\jdoe", "CONTOSO\\jd\u{3bf}e"), // Greek omicron
            ("CONTOSO\\jdoe", "CONTOSO\\jdo\u{435}"), // Cyrillic ie
            ("CONTOSO\\jdoe", "CONTOSO\u{2216}jdoe"), // SET MINUS
            ("CONTOSO\\paypal", "CONTOSO\\\u{440}aypal"), // Cyrillic er
            ("CONTOSO\\will", "CONTOSO\\wi1l"),
        ] {
            assert_ne!(account_key(real), account_key(fake));
            assert_eq!(skeleton(real), skeleton(fake), "{real} ~ {fake}");
        }
        assert_ne!(skeleton("CONTOSO\\jdoe"), skeleton("CONTOSO\\jdoe2"));
        assert_eq!(
            mixed_script_label("CONTOSO\\jd\u{3bf}e"),
            Some("jd\u{3bf}e")
        );
        assert_eq!(mixed_script_label("CONTOSO\\Ελένη"), None);
        assert_eq!(mixed_script_label("CORP\\田中たなか"), None);
        assert_eq!(mixed_script_label("CONTOSO\\jdoe"), None);
    }
}
