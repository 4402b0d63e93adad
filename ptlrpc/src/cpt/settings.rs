//! CPT settings: Lustre's `cpu_npartitions` and `cpu_pattern`.
//!
//! Owns: the settings type and the pattern parser. Everything here is checked
//! without looking at a machine: syntax, CPT indexes that are missing or
//! repeated, empty CPTs, a CPU (or NUMA node) named in two CPTs, numbers past
//! [`MAX_INDEX`]. Whether the named CPUs and nodes exist is checked later,
//! against a topology, by [`super::table`].
//!
//! Must not: read the machine's topology.
//!
//! Pattern grammar (whitespace is allowed between tokens):
//!
//! ```text
//! pattern := ["N"] group+            "N": the lists name NUMA nodes, not CPUs
//! group   := cpt "[" item ("," item)* "]"
//! item    := n | n "-" m | n "-" m "/" stride
//! ```
//!
//! e.g. `"0[0,1] 1[2,3]"`, `"0[0-7/2] 1[1-7/2]"`, `"N 0[0] 1[1]"`. CPT
//! indexes must be exactly `0..groups`, each once, in any order.

use std::fmt;

/// Largest CPU or NUMA node index a pattern may name. A limit on the pattern
/// keeps `0-4294967295` from expanding into billions of entries.
pub const MAX_INDEX: u32 = 65_535;

/// Longest pattern accepted, in bytes.
pub const MAX_PATTERN_LEN: usize = 16 * 1024;

/// How a node's CPUs are split into CPU partitions.
///
/// With neither field set there is one CPT per NUMA node that has CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CptSettings {
    /// Lustre's `cpu_npartitions`: how many CPTs to make. Cores are split
    /// evenly across them, whole cores only. `None`: one per NUMA node.
    pub npartitions: Option<u32>,
    /// Lustre's `cpu_pattern`, e.g. `"0[0,1] 1[2,3]"` (`CPT[CPUs]`) or
    /// `"N 0[0] 1[1]"` (`CPT[NUMA nodes]`). Overrides `npartitions`.
    pub pattern: Option<String>,
}

/// What a pattern's lists name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatternUnit {
    /// OS indexes of processing units (hwloc PUs, Linux CPUs).
    Cpu,
    /// OS indexes of NUMA nodes.
    NumaNode,
}

impl fmt::Display for PatternUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PatternUnit::Cpu => "CPU",
            PatternUnit::NumaNode => "NUMA node",
        })
    }
}

/// A parsed, self-consistent `cpu_pattern`: `members[i]` is CPT `i`'s list,
/// sorted, non-empty, and disjoint from every other CPT's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CptPattern {
    /// What the lists name.
    pub unit: PatternUnit,
    /// One list per CPT, indexed by CPT.
    pub members: Vec<Vec<u32>>,
}

/// What is wrong with a [`CptSettings`], found without a topology.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    /// `npartitions = 0`.
    #[error("cpu_npartitions must be at least 1 (leave it unset for one CPT per NUMA node)")]
    ZeroPartitions,
    /// The pattern has no groups at all.
    #[error("cpu_pattern {pattern:?} names no CPT (expected e.g. \"0[0,1] 1[2,3]\")")]
    EmptyPattern {
        /// The pattern as given.
        pattern: String,
    },
    /// The pattern is longer than [`MAX_PATTERN_LEN`].
    #[error("cpu_pattern is {len} bytes, more than the limit of {max}")]
    PatternTooLong {
        /// Its length in bytes.
        len: usize,
        /// [`MAX_PATTERN_LEN`].
        max: usize,
    },
    /// A syntax error.
    #[error("cpu_pattern {pattern:?}, at byte {at}: {problem}")]
    Syntax {
        /// The pattern as given.
        pattern: String,
        /// Byte offset of the problem.
        at: usize,
        /// What was expected or found.
        problem: &'static str,
    },
    /// A number past [`MAX_INDEX`].
    #[error("cpu_pattern {pattern:?}, at byte {at}: {value} is larger than the limit {max}")]
    IndexTooLarge {
        /// The pattern as given.
        pattern: String,
        /// Byte offset of the number.
        at: usize,
        /// The number (saturated at `u64::MAX`).
        value: u64,
        /// [`MAX_INDEX`].
        max: u32,
    },
    /// `a-b` with `b < a`, or a zero stride.
    #[error("cpu_pattern {pattern:?}, at byte {at}: bad range {first}-{last}/{stride}")]
    BadRange {
        /// The pattern as given.
        pattern: String,
        /// Byte offset of the range.
        at: usize,
        /// Start of the range.
        first: u32,
        /// End of the range (inclusive).
        last: u32,
        /// Step.
        stride: u32,
    },
    /// The same CPT index has two groups.
    #[error("cpu_pattern: CPT {cpt} is given twice")]
    DuplicateCpt {
        /// The repeated CPT index.
        cpt: u32,
    },
    /// CPT indexes must be `0..groups`; this one is missing.
    #[error("cpu_pattern: CPT {missing} is missing (the {count} groups must be CPTs 0 to {})", count - 1)]
    MissingCpt {
        /// The first missing index.
        missing: u32,
        /// How many groups the pattern has.
        count: u32,
    },
    /// A group with an empty list, `0[]`.
    #[error("cpu_pattern: CPT {cpt} has no {unit}s")]
    EmptyCpt {
        /// The CPT.
        cpt: u32,
        /// What its list should have named.
        unit: PatternUnit,
    },
    /// A CPU or node named twice, in one CPT or in two.
    #[error("cpu_pattern: {unit} {index} is in CPT {first} and again in CPT {second}")]
    ListedTwice {
        /// What `index` is.
        unit: PatternUnit,
        /// The CPU or node.
        index: u32,
        /// The CPT that named it first.
        first: u32,
        /// The CPT that named it again (may equal `first`).
        second: u32,
    },
}

impl CptSettings {
    /// Checks everything that does not need a topology and returns the
    /// parsed pattern, if any.
    pub fn validate(&self) -> Result<Option<CptPattern>, SettingsError> {
        if self.npartitions == Some(0) {
            return Err(SettingsError::ZeroPartitions);
        }
        self.pattern.as_deref().map(parse_pattern).transpose()
    }
}

/// Parses and checks a `cpu_pattern` (see the module docs for the grammar).
pub fn parse_pattern(pattern: &str) -> Result<CptPattern, SettingsError> {
    if pattern.len() > MAX_PATTERN_LEN {
        return Err(SettingsError::PatternTooLong { len: pattern.len(), max: MAX_PATTERN_LEN });
    }
    let mut p = Parser { text: pattern, pos: 0 };
    p.skip_ws();
    let unit = if p.eat(b'N') || p.eat(b'n') { PatternUnit::NumaNode } else { PatternUnit::Cpu };
    let mut groups: Vec<(u32, Vec<u32>)> = Vec::new();
    loop {
        p.skip_ws();
        if p.at_end() {
            break;
        }
        groups.push(p.group()?);
    }
    if groups.is_empty() {
        return Err(SettingsError::EmptyPattern { pattern: pattern.to_owned() });
    }
    check_groups(unit, groups)
}

/// Turns `(cpt, list)` groups into one list per CPT, checking indexes and
/// disjointness.
fn check_groups(unit: PatternUnit, groups: Vec<(u32, Vec<u32>)>) -> Result<CptPattern, SettingsError> {
    let count = u32::try_from(groups.len()).unwrap_or(u32::MAX);
    let mut members: Vec<Option<Vec<u32>>> = vec![None; groups.len()];
    let mut owner = std::collections::BTreeMap::<u32, u32>::new();
    for (cpt, list) in groups {
        let Some(slot) = members.get_mut(cpt as usize) else {
            // An index past the group count means a lower one is missing.
            let missing = (0..count).find(|i| !members.get(*i as usize).is_some_and(Option::is_some)).unwrap_or(0);
            return Err(SettingsError::MissingCpt { missing, count });
        };
        if slot.is_some() {
            return Err(SettingsError::DuplicateCpt { cpt });
        }
        if list.is_empty() {
            return Err(SettingsError::EmptyCpt { cpt, unit });
        }
        for &index in &list {
            if let Some(first) = owner.insert(index, cpt) {
                return Err(SettingsError::ListedTwice { unit, index, first, second: cpt });
            }
        }
        let mut list = list;
        list.sort_unstable();
        *slot = Some(list);
    }
    let mut out = Vec::with_capacity(members.len());
    for (i, m) in members.into_iter().enumerate() {
        match m {
            Some(list) => out.push(list),
            None => return Err(SettingsError::MissingCpt { missing: u32::try_from(i).unwrap_or(u32::MAX), count }),
        }
    }
    Ok(CptPattern { unit, members: out })
}

/// A byte cursor over the pattern.
struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.text.len()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    fn syntax(&self, problem: &'static str) -> SettingsError {
        SettingsError::Syntax { pattern: self.text.to_owned(), at: self.pos, problem }
    }

    fn expect(&mut self, b: u8, problem: &'static str) -> Result<(), SettingsError> {
        self.skip_ws();
        if self.eat(b) { Ok(()) } else { Err(self.syntax(problem)) }
    }

    /// A decimal number no larger than [`MAX_INDEX`].
    fn number(&mut self, what: &'static str) -> Result<u32, SettingsError> {
        self.skip_ws();
        let start = self.pos;
        let mut value: u64 = 0;
        while let Some(d) = self.peek().filter(u8::is_ascii_digit) {
            value = value.saturating_mul(10).saturating_add(u64::from(d - b'0'));
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.syntax(what));
        }
        u32::try_from(value).ok().filter(|v| *v <= MAX_INDEX).ok_or(SettingsError::IndexTooLarge {
            pattern: self.text.to_owned(),
            at: start,
            value,
            max: MAX_INDEX,
        })
    }

    /// `cpt "[" item ("," item)* "]"`.
    fn group(&mut self) -> Result<(u32, Vec<u32>), SettingsError> {
        let cpt = self.number("expected a CPT number")?;
        self.expect(b'[', "expected '[' after the CPT number")?;
        let mut list = Vec::new();
        self.skip_ws();
        if self.eat(b']') {
            return Ok((cpt, list));
        }
        loop {
            self.item(&mut list)?;
            self.skip_ws();
            if self.eat(b']') {
                return Ok((cpt, list));
            }
            if !self.eat(b',') {
                return Err(self.syntax("expected ',' or ']' in the list"));
            }
        }
    }

    /// `n | n "-" m | n "-" m "/" stride`, appended to `list`.
    fn item(&mut self, list: &mut Vec<u32>) -> Result<(), SettingsError> {
        self.skip_ws();
        let at = self.pos;
        let first = self.number("expected a number in the list")?;
        self.skip_ws();
        if !self.eat(b'-') {
            list.push(first);
            return Ok(());
        }
        let last = self.number("expected the end of the range after '-'")?;
        self.skip_ws();
        let stride = if self.eat(b'/') { self.number("expected a stride after '/'")? } else { 1 };
        if last < first || stride == 0 {
            return Err(SettingsError::BadRange { pattern: self.text.to_owned(), at, first, last, stride });
        }
        // Bounded: last <= MAX_INDEX.
        list.extend((first..=last).step_by(stride as usize));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<CptPattern, SettingsError> {
        parse_pattern(s)
    }

    #[test]
    fn cpu_pattern_with_lists_ranges_and_strides() {
        let p = parse(" 1[4-7] 0[0, 1,2 ,3]").unwrap();
        assert_eq!(p.unit, PatternUnit::Cpu);
        assert_eq!(p.members, vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]]);
        let p = parse("0[0-7/2] 1[1-7/2]").unwrap();
        assert_eq!(p.members, vec![vec![0, 2, 4, 6], vec![1, 3, 5, 7]]);
    }

    #[test]
    fn numa_pattern() {
        let p = parse("N 0[0] 1[1,2]").unwrap();
        assert_eq!(p.unit, PatternUnit::NumaNode);
        assert_eq!(p.members, vec![vec![0], vec![1, 2]]);
    }

    #[test]
    fn bad_patterns_name_the_problem() {
        let cases: &[(&str, &str)] = &[
            ("", "names no CPT"),
            ("N", "names no CPT"),
            ("0[0", "expected ',' or ']'"),
            ("0 0]", "expected '['"),
            ("[0]", "expected a CPT number"),
            ("0[a]", "expected a number"),
            ("0[1-]", "expected the end of the range"),
            ("0[3-1]", "bad range 3-1/1"),
            ("0[0-3/0]", "bad range 0-3/0"),
            ("0[99999999999]", "larger than the limit"),
            ("0[0] 0[1]", "CPT 0 is given twice"),
            ("0[0] 2[1]", "CPT 1 is missing"),
            ("1[0]", "CPT 0 is missing"),
            ("0[] 1[1]", "CPT 0 has no CPUs"),
            ("N 0[]", "CPT 0 has no NUMA nodes"),
            ("0[0,1] 1[1,2]", "CPU 1 is in CPT 0 and again in CPT 1"),
            ("0[0,0]", "CPU 0 is in CPT 0 and again in CPT 0"),
            ("N 0[0] 1[0]", "NUMA node 0 is in CPT 0 and again in CPT 1"),
        ];
        for (pattern, want) in cases {
            let err = parse(pattern).expect_err(pattern).to_string();
            assert!(err.contains(want), "{pattern:?}: {err:?} lacks {want:?}");
        }
    }

    #[test]
    fn settings_validation() {
        let zero = CptSettings { npartitions: Some(0), pattern: None };
        assert_eq!(zero.validate(), Err(SettingsError::ZeroPartitions));
        assert_eq!(CptSettings::default().validate(), Ok(None));
        let long = CptSettings { npartitions: None, pattern: Some(" ".repeat(MAX_PATTERN_LEN + 1)) };
        assert!(matches!(long.validate(), Err(SettingsError::PatternTooLong { .. })));
    }
}
