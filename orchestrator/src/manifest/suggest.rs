//! "Did you mean …?" for misspelt keys and values. The distance is
//! strsim's optimal string alignment (Levenshtein plus adjacent
//! transpositions); what counts as close enough is ours.

/// The candidate closest to `word`, if it is close enough to be a likely
/// typo: case, `-` versus `_`, one or two edits (transpositions count as
/// one), three for long words.
pub(crate) fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let normalize = |s: &str| s.to_lowercase().replace('-', "_");
    let word_n = normalize(word);
    let limit = match word_n.chars().count() {
        0..=3 => 1,
        4..=8 => 2,
        _ => 3,
    };
    candidates
        .iter()
        .map(|&c| (strsim::osa_distance(&word_n, &normalize(c)), c))
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        let keys = ["command", "args", "env", "restart", "crash_loop", "id"];
        assert_eq!(did_you_mean("comand", &keys), Some("command"));
        assert_eq!(did_you_mean("restrat", &keys), Some("restart"));
        assert_eq!(did_you_mean("crash-loop", &keys), Some("crash_loop"));
        assert_eq!(did_you_mean("Command", &keys), Some("command"));
        assert_eq!(did_you_mean("arg", &keys), Some("args"));
        assert_eq!(did_you_mean("xyz", &keys), None);
        assert_eq!(did_you_mean("nickname", &keys), None);
    }
}
